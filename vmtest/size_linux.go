package vmtest

import (
	"os"
	"syscall"
	"testing"
)

// imageSize returns a sparse image's apparent size and the bytes gok
// actually wrote (what a dd of the used blocks, or a compressed copy, costs).
func imageSize(tb testing.TB, path string) (apparent, used int64) {
	st, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return st.Size(), st.Size()
	}
	return st.Size(), sys.Blocks * 512
}
