package vmbench

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// Load is saturating TCP between the router and the server namespaces: Up flows send from
// the router, Down flows from the server (plain TCP, CUBIC: what fills a modem's buffer).
type Load struct {
	lnUp, lnDown net.Listener
	topo         *Topology

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// NewLoad opens the server's listeners.
func NewLoad(t *Topology) (*Load, error) {
	l := &Load{topo: t}
	if err := inNS(t.Srv, func() (err error) {
		if l.lnUp, err = net.Listen("tcp4", t.ServerIP+":5001"); err != nil {
			return err
		}
		l.lnDown, err = net.Listen("tcp4", t.ServerIP+":5002")
		return err
	}); err != nil {
		if l.lnUp != nil {
			l.lnUp.Close()
		}
		return nil, fmt.Errorf("load: Listen in %s: %w", t.Srv, err)
	}
	l.wg.Add(2)
	go l.accept(l.lnUp, false)
	go l.accept(l.lnDown, true)
	return l, nil
}

func (l *Load) accept(ln net.Listener, send bool) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		l.track(c)
		l.wg.Add(1)
		go l.pump(c, send)
	}
}

func (l *Load) track(c net.Conn) {
	l.mu.Lock()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
}

func (l *Load) pump(c net.Conn, send bool) {
	defer l.wg.Done()
	defer c.Close()
	if !send {
		io.Copy(io.Discard, c)
		return
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// Start opens up upload and down download flows from the router.
func (l *Load) Start(up, down int) error {
	for i := 0; i < up+down; i++ {
		port := "5001"
		if i >= up {
			port = "5002"
		}
		var c net.Conn
		if err := inNS(l.topo.RT, func() (err error) {
			c, err = net.Dial("tcp4", l.topo.ServerIP+":"+port)
			return err
		}); err != nil {
			return fmt.Errorf("load: Dial(%s:%s): %w", l.topo.ServerIP, port, err)
		}
		l.track(c)
		l.wg.Add(1)
		go l.pump(c, i < up)
	}
	return nil
}

// Stop closes every flow (both ends).
func (l *Load) Stop() {
	l.mu.Lock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
}

// Close stops the flows and the listeners.
func (l *Load) Close() {
	l.lnUp.Close()
	l.lnDown.Close()
	l.Stop()
	l.wg.Wait()
}
