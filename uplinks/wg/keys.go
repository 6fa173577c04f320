package wg

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// GenerateKeyPair returns a new private key and its public key.
func GenerateKeyPair() (priv, pub wgtypes.Key, err error) {
	priv, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, wgtypes.Key{}, fmt.Errorf("wgtypes.GeneratePrivateKey: %w", err)
	}
	return priv, priv.PublicKey(), nil
}

// LoadPrivateKey reads a private key file as `wg genkey` writes it: one
// base64 line. A file that group or others may read is loaded with a warning
// rather than refused: wg(8) itself only warns, and refusing would take an
// uplink down over a chmod; the warning names the file and the fix.
func LoadPrivateKey(path string) (wgtypes.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("private key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("private key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("private key file %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		slog.Warn("private key file is accessible to group or others; chmod 600 it", "path", path, "mode", fmt.Sprintf("%#o", perm))
	}
	// A key is 44 characters; read a little more to tell "too long" apart.
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("private key file %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return wgtypes.Key{}, fmt.Errorf("private key file %s: empty", path)
	}
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		// ParseKey's error could echo key material; say what is wrong
		// without it.
		return wgtypes.Key{}, fmt.Errorf("private key file %s: not a base64 WireGuard key (as `wg genkey` writes, 44 characters): %d characters", path, len(s))
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, fmt.Errorf("private key file %s: all-zero key", path)
	}
	return k, nil
}
