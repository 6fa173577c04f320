package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// uapiDir is where wireguard-go and wg(8) meet. It is a plain directory, so
// it is shared by every network namespace of the host: two namespaces with a
// userspace interface of the same name would fight over one socket.
const uapiDir = "/var/run/wireguard"

func uapiPath(name string) string { return filepath.Join(uapiDir, name+".sock") }

// userDevice is one in-process wireguard-go device with its TUN and UAPI
// socket; wgctrl and wg(8) reach it through the socket like a kernel device.
type userDevice struct {
	name    string
	ifindex int
	log     *slog.Logger
	dev     *device.Device

	uapi       net.Listener
	acceptDone chan struct{}
}

func newUserDevice(log *slog.Logger, name string, mtu int) (*userDevice, error) {
	u := &userDevice{name: name, log: log.With("interface", name)}
	// The socket first: a name clash with another namespace then fails
	// before any TUN exists.
	f, err := openUAPI(u.log, name)
	if err != nil {
		return nil, err
	}
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		f.Close()
		os.Remove(uapiPath(name))
		return nil, fmt.Errorf("tun.CreateTUN(%s, mtu %d): %w", name, mtu, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		tdev.Close()
		f.Close()
		os.Remove(uapiPath(name))
		return nil, fmt.Errorf("LinkByName(%s) after tun.CreateTUN: %w", name, err)
	}
	u.ifindex = link.Attrs().Index
	u.dev = device.NewDevice(tdev, conn.NewDefaultBind(), u.logger())
	if err := u.listen(f); err != nil {
		u.dev.Close()
		os.Remove(uapiPath(name))
		return nil, err
	}
	return u, nil
}

// openUAPI claims the interface's UAPI socket, removing a stale one left by
// a dead process (nobody answers on it) and refusing a live one.
func openUAPI(log *slog.Logger, name string) (*os.File, error) {
	p := uapiPath(name)
	if _, err := os.Lstat(p); err == nil {
		c, err := net.DialTimeout("unix", p, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("interface %s: UAPI socket %s is in use by another process; WireGuard interface names must be unique across all network namespaces", name, p)
		}
		if err := os.Remove(p); err != nil && !isNotExist(err) {
			return nil, fmt.Errorf("remove stale UAPI socket %s: %w", p, err)
		}
		log.Info("removed stale UAPI socket", "path", p, "dial", err)
	}
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("ipc.UAPIOpen(%s): %w", p, err)
	}
	return f, nil
}

// listen serves UAPI requests on f until the listener closes; ipc closes it
// by itself when someone deletes the socket file.
func (u *userDevice) listen(f *os.File) error {
	l, err := ipc.UAPIListen(u.name, f)
	// UAPIListen works on its own duplicate of the descriptor.
	f.Close()
	if err != nil {
		return fmt.Errorf("ipc.UAPIListen(%s): %w", uapiPath(u.name), err)
	}
	u.uapi = l
	done := make(chan struct{})
	u.acceptDone = done
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go u.dev.IpcHandle(c)
		}
	}()
	return nil
}

// ensureUAPI re-creates the socket if it was deleted under a running device.
func (u *userDevice) ensureUAPI(log *slog.Logger) error {
	select {
	case <-u.acceptDone:
	default:
		if _, err := os.Lstat(uapiPath(u.name)); err == nil {
			return nil
		}
	}
	u.uapi.Close()
	<-u.acceptDone
	log.Warn("UAPI socket vanished, re-creating it", "interface", u.name)
	f, err := openUAPI(u.log, u.name)
	if err != nil {
		return err
	}
	return u.listen(f)
}

func (u *userDevice) alive() bool {
	select {
	case <-u.dev.Wait():
		return false
	default:
		return true
	}
}

// close stops the device; closing the TUN makes the kernel delete its link.
func (u *userDevice) close() error {
	// The listener unlinks the socket file on close. Its error is only
	// worth a debug line: after the file was deleted under it, ipc's
	// inotify canceller is already closed and Close says so.
	if err := u.uapi.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		u.log.Debug("closing UAPI listener", "path", uapiPath(u.name), "err", err)
	}
	<-u.acceptDone
	u.dev.Close()
	return nil
}

func (u *userDevice) logger() *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			u.log.Debug("wireguard-go: " + fmt.Sprintf(format, args...))
		},
		Errorf: func(format string, args ...any) {
			u.log.Warn("wireguard-go: " + fmt.Sprintf(format, args...))
		},
	}
}
