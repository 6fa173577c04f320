package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Initramfs collects files for a newc cpio archive, the format the kernel
// unpacks into its rootfs before running /init.
type Initramfs struct {
	entries map[string]entry // guest path → entry
}

type entry struct {
	mode    uint32 // including the S_IF* type bits
	hostSrc string // regular files: copied from here
	data    []byte // regular files without hostSrc; symlink target
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

// NewInitramfs returns an archive holding static busybox (as /bin/busybox,
// its applets installed by /init) and the directories /init mounts on.
func NewInitramfs() (*Initramfs, error) {
	r := &Initramfs{entries: map[string]entry{}}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("LookPath(busybox): %w (apt-get install busybox-static)", err)
	}
	if err := checkStatic(bb); err != nil {
		return nil, err
	}
	if err := r.AddFile("/bin/busybox", bb); err != nil {
		return nil, err
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/etc", "/sbin", "/usr/bin", "/usr/sbin", "/var/run"} {
		r.addDir(d)
	}
	return r, nil
}

func checkStatic(p string) error {
	out, err := exec.Command("file", "-L", p).Output()
	if err != nil {
		return nil // no file(1): busybox will tell at boot
	}
	if !bytes.Contains(out, []byte("statically linked")) && !bytes.Contains(out, []byte("static-pie")) {
		return fmt.Errorf("%s is not statically linked (apt-get install busybox-static)", p)
	}
	return nil
}

func (r *Initramfs) addDir(p string) {
	p = path.Clean(p)
	for d := p; d != "/" && d != "."; d = path.Dir(d) {
		if _, ok := r.entries[d]; !ok {
			r.entries[d] = entry{mode: sIFDIR | 0o755}
		}
	}
}

// AddFile copies the host file src to the guest path dst, keeping its
// permission bits.
func (r *Initramfs) AddFile(dst, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("initramfs: Stat(%s): %w", src, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: %s is not a regular file", src)
	}
	r.addDir(path.Dir(dst))
	r.entries[path.Clean(dst)] = entry{mode: sIFREG | uint32(st.Mode().Perm()), hostSrc: src}
	return nil
}

// AddBytes places data at the guest path dst with permission bits perm.
func (r *Initramfs) AddBytes(dst string, data []byte, perm os.FileMode) {
	r.addDir(path.Dir(dst))
	r.entries[path.Clean(dst)] = entry{mode: sIFREG | uint32(perm.Perm()), data: data}
}

// AddSymlink creates the guest symlink dst → target.
func (r *Initramfs) AddSymlink(dst, target string) {
	r.addDir(path.Dir(dst))
	r.entries[path.Clean(dst)] = entry{mode: sIFLNK | 0o777, data: []byte(target)}
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// AddTool copies a host executable (looked up in $PATH, e.g. "tc") to the same
// path in the guest, with the shared libraries and loader ldd names for it.
// Debian's iproute2 and nftables are dynamically linked; copying them beats
// maintaining static builds of tools whose output the tests compare against.
func (r *Initramfs) AddTool(name string) error {
	p, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("initramfs: LookPath(%s): %w", name, err)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("initramfs: EvalSymlinks(%s): %w", p, err)
	}
	if err := r.AddFile(p, real); err != nil {
		return err
	}
	out, err := exec.Command("ldd", real).Output()
	if err != nil {
		// "not a dynamic executable": static, nothing more to copy.
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := lddLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		lib := m[1]
		lreal, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return fmt.Errorf("initramfs: EvalSymlinks(%s) for %s: %w", lib, name, err)
		}
		if err := r.AddFile(lib, lreal); err != nil {
			return err
		}
	}
	return nil
}

// WriteTo writes the archive in newc format.
func (r *Initramfs) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names) // parents before children
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	for i, n := range names {
		if err := r.writeEntry(cw, uint32(i+1), n); err != nil {
			return cw.n, err
		}
	}
	writeHeader(cw, 0, 0, 1, 0, "TRAILER!!!")
	if cw.err != nil {
		return cw.n, cw.err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

func (r *Initramfs) writeEntry(cw *countWriter, ino uint32, name string) error {
	e := r.entries[name]
	var size int64
	var src io.Reader
	switch {
	case e.hostSrc != "":
		f, err := os.Open(e.hostSrc)
		if err != nil {
			return fmt.Errorf("initramfs: Open(%s): %w", e.hostSrc, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("initramfs: Stat(%s): %w", e.hostSrc, err)
		}
		size, src = st.Size(), f
	case e.mode&0o170000 == sIFDIR:
	default:
		size, src = int64(len(e.data)), bytes.NewReader(e.data)
	}
	writeHeader(cw, ino, e.mode, 1, size, strings.TrimPrefix(name, "/"))
	if src != nil {
		if _, err := io.CopyN(cw, src, size); err != nil {
			return fmt.Errorf("initramfs: copying %s: %w", name, err)
		}
		pad(cw)
	}
	return nil
}

// WriteFile writes the archive to a file.
func (r *Initramfs) WriteFile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if _, err := r.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeHeader(w *countWriter, ino, mode, nlink uint32, size int64, name string) {
	fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, 0, 0, len(name)+1, 0)
	io.WriteString(w, name)
	w.Write([]byte{0})
	pad(w)
}

func pad(w *countWriter) {
	if n := w.n % 4; n != 0 {
		w.Write(make([]byte, 4-n))
	}
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}
