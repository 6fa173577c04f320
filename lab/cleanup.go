package lab

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// cleanupStack runs teardown steps in reverse order of setup. Every step
// runs even when an earlier one fails, because a half-torn-down lab (a
// namespace left behind, a wireguard-go socket in /var/run/wireguard) breaks
// the next run on a shared machine.
type cleanupStack struct {
	mu    sync.Mutex
	steps []cleanupStep
	log   io.Writer
}

type cleanupStep struct {
	name string
	fn   func() error
}

func (c *cleanupStack) push(name string, fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps = append(c.steps, cleanupStep{name, fn})
}

// run pops and runs every step; it is safe to call more than once.
func (c *cleanupStack) run() error {
	c.mu.Lock()
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", steps[i].name, err))
			if c.log != nil {
				fmt.Fprintf(c.log, "lab: cleanup %s: %v\n", steps[i].name, err)
			}
		}
	}
	return errors.Join(errs...)
}
