// Command wpa_supplicant starts Debian's wpa_supplicant on the gokrazy
// image, where there is no libc.
//
// gokrazy installs every Go package of the image as /user/<name>, so this
// program is /user/wpa_supplicant, where the WiFi uplink manager looks for
// the supplicant (uplinks/wifi). The real program, its shared libraries and
// glibc's loader are carried in BundleDir (image/config.json's
// ExtraFilePaths, written by mkinstance with image/elfbundle). This program
// replaces itself (execve, same PID, so the manager's signals reach the
// supplicant) with
//
//	BundleDir/ld-linux-x86-64.so.2 --library-path BundleDir --argv0 wpa_supplicant BundleDir/wpa_supplicant ARGS...
//
// Invoking the loader explicitly, rather than putting glibc at the standard
// paths, keeps the bundle out of /lib: nothing else in the image becomes
// able to load glibc by accident. It is built into the image with
// DontStart: gokrazy must not run it at boot.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// BundleDir is where the image carries the supplicant and its libraries.
const BundleDir = "/usr/lib/wpa_supplicant"

// Loader and Program are the bundle's file names (see image/elfbundle).
const (
	Loader  = "ld-linux-x86-64.so.2"
	Program = "wpa_supplicant"
)

// argv builds the loader's command line for the supplicant's args.
func argv(dir string, args []string) []string {
	return append([]string{
		filepath.Join(dir, Loader), "--library-path", dir, "--argv0", Program, filepath.Join(dir, Program),
	}, args...)
}

func main() {
	dir := BundleDir
	// For tests that lay the bundle out elsewhere (the image never sets it).
	if d := os.Getenv("LIFELINE_WPA_BUNDLE"); d != "" {
		dir = d
	}
	a := argv(dir, os.Args[1:])
	err := syscall.Exec(a[0], a, os.Environ())
	fmt.Fprintf(os.Stderr, "wpa_supplicant: exec %s: %v (is the bundle in the image? see image/README.md)\n", a[0], err)
	os.Exit(127)
}
