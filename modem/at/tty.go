package at

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// OpenTTY opens a serial device for exclusive use and puts it in raw mode at
// 115200 baud (USB modems ignore the rate; real UARTs need it).
//
// Two locks, because each stops a different intruder: flock(LOCK_EX) stops
// cooperating programs (ModemManager, minicom, another lifeline), TIOCEXCL
// makes the kernel refuse any further open(2) of the tty by non-root
// programs that do not use flock. A second reader on the same tty would
// steal reply lines at random.
func OpenTTY(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open(%s): %w", path, err)
	}
	fail := func(call string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s(%s): %w", call, path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if err == unix.EWOULDBLOCK {
			return fail("flock", fmt.Errorf("port in use by another process: %w", err))
		}
		return fail("flock", err)
	}
	if err := SetRaw(fd); err != nil {
		return fail("tcsetattr", err)
	}
	if err := unix.IoctlSetInt(fd, unix.TIOCEXCL, 0); err != nil {
		return fail("ioctl TIOCEXCL", err)
	}
	// Drop whatever the modem said before we arrived.
	_ = unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIOFLUSH)
	// The fd stays non-blocking so the runtime poller serves it and Close
	// interrupts a pending Read.
	return os.NewFile(uintptr(fd), path), nil
}

// SetRaw puts the tty fd in raw mode (cfmakeraw) at 115200 baud: no echo,
// no CR/NL translation, no signals, 8N1.
func SetRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("not a tty: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | unix.B115200
	t.Ispeed, t.Ospeed = unix.B115200, unix.B115200
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
