package config

import (
	"fmt"
	"math/big"
	"strings"
)

// sizeUnits are MooseFS's: k, M, G, T, P, E are powers of 1000, Ki ... Ei
// powers of 1024 (a lone K is neither), each optionally followed by B.
var sizeUnits = map[string]int64{
	"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
}

// ParseSize parses a size as MooseFS writes them in its configuration
// files (mfshdd.cfg, HDD_LEAVE_SPACE_DEFAULT, ...): a decimal number with an optional fraction and
// unit, "[0-9]*(.[0-9]*)?([kMGTPE]|[KMGTPE]i)?B?" ("256MiB", "1.5T",
// "5GiB", "100"). The result is rounded to whole bytes.
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSuffix(s[i:], "B")
	intPart, frac, hasDot := strings.Cut(num, ".")
	if num == "" || strings.Contains(frac, ".") || hasDot && frac == "" || intPart == "" && frac == "" {
		return 0, fmt.Errorf("%q is not a size (like 256MiB, 1.5T or 100)", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		hint := ""
		if unit == "K" {
			hint = "; write k (1000) or Ki (1024)"
		}
		return 0, fmt.Errorf("%q has an unknown unit %q (k M G T P E or Ki Mi Gi Ti Pi Ei, optional B)%s", s, unit, hint)
	}
	// big.Rat keeps "1.5TiB" and twenty-digit numbers exact, where the
	// float64 MooseFS uses would round.
	r, ok := new(big.Rat).SetString("0" + num)
	if !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Lsh(m, 1).Cmp(r.Denom()) >= 0 { // round half up
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return q.Int64(), nil
}
