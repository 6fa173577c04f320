package ethernet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vishvananda/netlink closes a subscription's channel on any receive error
// (ENOBUFS when events outran us): WatchCarrier must subscribe again and
// keep reporting.
func TestWatchCarrierResubscribes(t *testing.T) {
	h, err := netlink.NewHandle()
	if err != nil {
		t.Skipf("netlink: %v", err)
	}
	defer h.Close()
	var mu sync.Mutex
	subs := 0
	k := &kernel{h: h, ns: netns.None(), log: slog.Default()}
	k.subscribe = func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, o netlink.LinkSubscribeOptions) error {
		mu.Lock()
		subs++
		n := subs
		mu.Unlock()
		if !o.ListExisting {
			t.Error("subscription without ListExisting cannot resync")
		}
		go func() {
			defer close(ch)
			flags := uint32(unix.IFF_UP | unix.IFF_LOWER_UP)
			state := netlink.LinkOperState(netlink.OperUp)
			if n == 2 {
				flags, state = unix.IFF_UP, netlink.OperDown
			}
			u := netlink.LinkUpdate{Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", RawFlags: flags, OperState: state}}}
			u.Header.Type = unix.RTM_NEWLINK
			select {
			case ch <- u:
			case <-done:
				return
			}
			if n < 3 {
				o.ErrorCallback(errors.New("Receive failed: no buffer space available"))
				return // the library's behaviour: channel closed
			}
			<-done
		}()
		return nil
	}
	got := make(chan bool, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.WatchCarrier(ctx, "lo", func(c bool) { got <- c })
	for i, want := range []bool{true, false, true} {
		select {
		case c := <-got:
			if c != want {
				t.Fatalf("report %d: carrier %v, want %v", i, c, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("report %d missing: no resubscription", i)
		}
	}
}
