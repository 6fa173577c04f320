// Package elfbundle copies a dynamically linked program together with every
// shared library it loads and its ELF interpreter into one directory.
//
// It exists because a gokrazy root file system has no libc: everything in
// it is a static Go binary. wpa_supplicant is C and Debian builds it against
// glibc, libnl, OpenSSL and dbus; rather than cross-building a static
// supplicant (and owning that build), the image carries Debian's binary with
// its libraries in a directory of its own and starts it through the bundled
// loader (ld-linux --library-path DIR), so nothing in the rest of the image
// can pick up glibc by accident. The dependency walk reads DT_NEEDED with
// debug/elf instead of running ldd: ldd executes the program's loader, and
// the result must not depend on which host the image is built on beyond the
// files themselves.
package elfbundle

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// SearchPath is where needed libraries are looked up, in order: glibc's
// default trusted directories on Debian amd64 (there is no ld.so.cache
// parsing; a library elsewhere is an error naming it).
var SearchPath = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// File is one file of a bundle.
type File struct {
	Name   string // file name inside the bundle directory
	Source string // host path it was copied from (symlinks resolved)
	SHA256 string
	// Package is the Debian package that owns Source ("" when dpkg does
	// not know it or is absent).
	Package string
}

// Bundle describes a written bundle directory.
type Bundle struct {
	Program     string // bundle file name of the program
	Interpreter string // bundle file name of the ELF interpreter
	Files       []File
}

// ManifestName is the file Write leaves in the bundle saying where every
// file came from.
const ManifestName = "MANIFEST"

// Write copies program (renamed to name), its interpreter and the
// transitive closure of its DT_NEEDED libraries into dir, which is created
// or replaced as a whole. Libraries are stored under their
// DT_NEEDED name, which is what the loader looks for with --library-path.
func Write(program, name, dir string) (*Bundle, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("bundle name %q: want a plain file name", name)
	}
	interp, needed, err := deps(program)
	if err != nil {
		return nil, err
	}
	if interp == "" {
		return nil, fmt.Errorf("%s: no PT_INTERP (a static program needs no bundle)", program)
	}
	type want struct{ name, src string }
	files := []want{{name, program}, {filepath.Base(interp), interp}}
	seen := map[string]bool{filepath.Base(interp): true}
	queue := append([]string(nil), needed...)
	for len(queue) > 0 {
		lib := queue[0]
		queue = queue[1:]
		if seen[lib] {
			continue
		}
		seen[lib] = true
		src, err := find(lib)
		if err != nil {
			return nil, fmt.Errorf("%s needs %s: %w", program, lib, err)
		}
		files = append(files, want{lib, src})
		_, more, err := deps(src)
		if err != nil {
			return nil, err
		}
		queue = append(queue, more...)
	}

	// Assemble next to dir and swap it in at the end, so a build reading
	// dir (another image target) never sees half a bundle.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("MkdirAll(%s): %w", filepath.Dir(dir), err)
	}
	final := dir
	dir, err = os.MkdirTemp(filepath.Dir(final), "."+filepath.Base(final)+"-")
	if err != nil {
		return nil, fmt.Errorf("MkdirTemp(%s): %w", filepath.Dir(final), err)
	}
	defer os.RemoveAll(dir) // only left over on error: renamed otherwise
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("Chmod(%s): %w", dir, err)
	}
	b := &Bundle{Program: name, Interpreter: filepath.Base(interp)}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f.src)
		if err != nil {
			return nil, fmt.Errorf("EvalSymlinks(%s): %w", f.src, err)
		}
		sum, err := copyFile(real, filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		b.Files = append(b.Files, File{Name: f.name, Source: real, SHA256: sum, Package: dpkgOwner(f.src, real)})
	}
	sort.Slice(b.Files[2:], func(i, j int) bool { return b.Files[2+i].Name < b.Files[2+j].Name })
	if err := os.WriteFile(filepath.Join(dir, ManifestName), []byte(b.Manifest()), 0o444); err != nil {
		return nil, fmt.Errorf("WriteFile(%s): %w", ManifestName, err)
	}
	if err := os.RemoveAll(final); err != nil {
		return nil, fmt.Errorf("RemoveAll(%s): %w", final, err)
	}
	if err := os.Rename(dir, final); err != nil {
		return nil, fmt.Errorf("Rename(%s, %s): %w", dir, final, err)
	}
	return b, nil
}

// Manifest is the text of the MANIFEST file: one line per file, name,
// source path, Debian package and SHA-256.
func (b *Bundle) Manifest() string {
	var s strings.Builder
	fmt.Fprintf(&s, "# %s with its ELF interpreter and shared libraries, copied from the build host by image/elfbundle.\n", b.Program)
	fmt.Fprintf(&s, "# Run as: %s --library-path <this dir> <this dir>/%s ...\n", b.Interpreter, b.Program)
	for _, f := range b.Files {
		pkg := f.Package
		if pkg == "" {
			pkg = "-"
		}
		fmt.Fprintf(&s, "%s\t%s\t%s\tsha256:%s\n", f.Name, f.Source, pkg, f.SHA256)
	}
	return s.String()
}

// deps returns an ELF file's interpreter (if any) and DT_NEEDED entries.
func deps(path string) (interp string, needed []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("elf.Open(%s): %w", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return "", nil, fmt.Errorf("%s: machine %v, want %v", path, f.Machine, elf.EM_X86_64)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return "", nil, fmt.Errorf("%s: reading PT_INTERP: %w", path, err)
		}
		interp = strings.TrimRight(string(b), "\x00")
	}
	needed, err = f.ImportedLibraries()
	if err != nil {
		return "", nil, fmt.Errorf("%s: DT_NEEDED: %w", path, err)
	}
	return interp, needed, nil
}

func find(lib string) (string, error) {
	for _, d := range SearchPath {
		p := filepath.Join(d, lib)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %v", SearchPath)
}

func copyFile(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("Open(%s): %w", src, err)
	}
	defer in.Close()
	// 0755 for everything: the loader and the program are executed, and
	// gokrazy copies the mode into the image as it finds it.
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return "", fmt.Errorf("OpenFile(%s): %w", dst, err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("Close(%s): %w", dst, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// dpkgOwner asks dpkg which package owns path (trying the name as linked
// and the resolved one: with merged /usr either can be the registered one).
func dpkgOwner(paths ...string) string {
	bin, err := exec.LookPath("dpkg-query")
	if err != nil {
		return ""
	}
	// Debian 12 registers most files under their pre-merge names
	// (/sbin/wpa_supplicant, /lib/x86_64-linux-gnu/...).
	for _, p := range paths {
		if rest, ok := strings.CutPrefix(p, "/usr/"); ok {
			paths = append(paths, "/"+rest)
		}
	}
	for _, p := range paths {
		out, err := exec.Command(bin, "-S", p).Output()
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(string(out), "\n")
		if pkg, _, ok := strings.Cut(line, ": "); ok {
			ver, err := exec.Command(bin, "-W", "-f", "${Version}", strings.SplitN(pkg, ",", 2)[0]).Output()
			if err == nil && len(ver) > 0 {
				return pkg + "=" + string(ver)
			}
			return pkg
		}
	}
	return ""
}
