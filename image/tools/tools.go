//go:build tools

// Package tools pins the gokrazy tools (gok) that build and update the
// Lifeline image, so that `make image` uses one known version instead of
// whatever `go install ...@latest` returns on the day.
package tools

import _ "github.com/gokrazy/tools/cmd/gok"
