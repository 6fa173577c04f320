package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const modulePath = "github.com/lifeline-router/lifeline"

// ModuleRoot returns the directory of the Lifeline go.mod, searching upwards
// from the working directory (go test runs in the package directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("Getwd: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module "+modulePath+"\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of %s above %s", modulePath, dir)
		}
	}
}

// DefaultKernel returns the committed board kernel, board/amd64/vmlinuz, or
// $LIFELINE_KERNEL when set.
func DefaultKernel() (string, error) {
	if k := os.Getenv("LIFELINE_KERNEL"); k != "" {
		return k, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	k := filepath.Join(root, "board", "amd64", "vmlinuz")
	if _, err := os.Stat(k); err != nil {
		return "", fmt.Errorf("board kernel: %w (run make kernel)", err)
	}
	return k, nil
}
