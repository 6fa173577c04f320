package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/lifeline-router/lifeline/appliance/config"
	"github.com/lifeline-router/lifeline/uplinks/wg"
)

// provision prepares a freshly flashed router: the image carries the
// operator's config at from (read-only root), the supervisor keeps it under
// /perm so it survives updates and can be edited, and every WireGuard
// private key the config names but /perm lacks is generated there, its
// public key printed for the concentrator's config. An existing config is
// never overwritten.
func provision(cfgPath, from string, log *slog.Logger) error {
	if from == "" {
		return nil
	}
	if _, err := os.Stat(cfgPath); errors.Is(err, fs.ErrNotExist) {
		if err := copyFile(from, cfgPath); err != nil {
			return fmt.Errorf("provisioning %s from %s: %w", cfgPath, from, err)
		}
		log.Info("first boot: config provisioned", "config", cfgPath, "from", from)
	} else if err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	for i, u := range cfg.Uplinks {
		p := u.WireGuard.PrivateKeyFile
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		priv, pub, err := wg.GenerateKeyPair()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("uplinks[%d].wireguard.private_key_file: %w", i, err)
		}
		if err := os.WriteFile(p, []byte(priv.String()+"\n"), 0o600); err != nil {
			return fmt.Errorf("uplinks[%d].wireguard.private_key_file: %w", i, err)
		}
		log.Info("first boot: generated a WireGuard key; put its public key into the concentrator's config",
			"uplink", u.Name, "file", p, "field", fmt.Sprintf("uplinks[%d].wireguard.public_key", i), "public_key", pub.String())
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return err
	}
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}
