package vmtest

import "testing"

func TestAccel(t *testing.T) {
	a, why := Accel()
	if a != "kvm" && a != "tcg" {
		t.Fatalf("Accel() = %q (%s), want kvm or tcg", a, why)
	}
	t.Logf("accelerator: %s (%s)", a, why)
}
