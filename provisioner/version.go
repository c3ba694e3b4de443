package provisioner

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// compareVersions orders firmware versions as vendors write them, for
// baselines ("at least"). The rule, documented in docs/acceptance.md:
//
//  1. Text in parentheses is left out: it is a build date or a note
//     ("U50 v2.10 (04/10/2024)").
//  2. When the baseline starts with a digit and the version does not, the
//     version's product prefix is left out: it is read from its first
//     dotted run of numbers ("U50 v2.10" is read as "2.10"), or else from
//     its first digit.
//  3. The rest is split into parts: runs of digits, compared as numbers
//     ("2.10" is after "2.9"), and runs of letters, compared as text
//     without case ("GDC7302Q" is after "GDC7201Q"); anything else only
//     separates.
//  4. Where one has a number and the other text, the number is later (a
//     release is after its candidates); where one runs out, it is earlier
//     ("1.0" before "1.0.1") unless the other goes on with a pre-release
//     tag (alpha, beta, pre, rc, dev): "1.4.0-rc2" is before "1.4.0".
//
// It returns <0, 0 or >0 as a is before, the same as, or after b.
func compareVersions(a, b string) int {
	a, b = stripParens(a), stripParens(b)
	if startsWithDigit(b) && !startsWithDigit(a) {
		a = fromNumericCore(a)
	}
	pa, pb := versionParts(a), versionParts(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, y := pa[i], pb[i]
		nx, ex := strconv.ParseUint(x, 10, 64)
		ny, ey := strconv.ParseUint(y, 10, 64)
		switch {
		case ex == nil && ey == nil:
			if nx != ny {
				if nx < ny {
					return -1
				}
				return 1
			}
		case ex == nil:
			return 1
		case ey == nil:
			return -1
		default:
			if c := strings.Compare(strings.ToLower(x), strings.ToLower(y)); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(pa) > len(pb) && isPreRelease(pa[len(pb)]):
		return -1
	case len(pb) > len(pa) && isPreRelease(pb[len(pa)]):
		return 1
	}
	return len(pa) - len(pb)
}

var parens = regexp.MustCompile(`\([^)]*\)`)

func stripParens(v string) string { return strings.TrimSpace(parens.ReplaceAllString(v, " ")) }

func startsWithDigit(v string) bool { return v != "" && v[0] >= '0' && v[0] <= '9' }

var dottedNumbers = regexp.MustCompile(`[0-9]+(\.[0-9]+)+`)

// fromNumericCore drops a version's product prefix: "U50 v2.10" → "2.10".
func fromNumericCore(v string) string {
	if loc := dottedNumbers.FindStringIndex(v); loc != nil {
		return v[loc[0]:]
	}
	if i := strings.IndexFunc(v, unicode.IsDigit); i >= 0 {
		return v[i:]
	}
	return v
}

func isPreRelease(part string) bool {
	switch strings.ToLower(part) {
	case "alpha", "a", "beta", "b", "pre", "rc", "dev":
		return true
	}
	return false
}

func versionParts(v string) []string {
	var out []string
	cur, digit := "", false
	for _, r := range v {
		d := unicode.IsDigit(r)
		if !unicode.IsLetter(r) && !d {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		if cur != "" && d != digit {
			out = append(out, cur)
			cur = ""
		}
		cur += string(r)
		digit = d
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}
