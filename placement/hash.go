package placement

import "math"

// The functions in this file are part of the cluster's protocol: every node
// must compute bit-identical scores, across versions and CPU architectures,
// or nodes that see the same view disagree on owners. Changing any of them
// moves slots; golden values in hash_test.go catch accidental changes.

// hashString is 64-bit FNV-1a followed by mix, so that names differing in
// one character get unrelated hashes.
func hashString(s string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return mix(h)
}

// mix is the splitmix64 finalizer: a bijection on uint64 with full
// avalanche (every input bit flips every output bit with probability ~1/2).
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// slotHash is the hash of slot index of the service whose name hashes to h.
func slotHash(h uint64, index int) uint64 {
	return mix(h + uint64(index+1)*0x9e3779b97f4a7c15)
}

// pairHash combines a node hash and a slot hash into the slot's raw score
// for that node. Both inputs are already mixed; the final mix makes the
// rankings of different slots independent.
func pairHash(node, slot uint64) uint64 { return mix(node ^ slot) }

// uniformKey is the score of a pair when all nodes have the same weight:
// the top 53 bits of the pair hash, so that float64(uniformKey) is exact.
func uniformKey(h uint64) uint64 { return h >> 11 }

// unitInterval maps a pair hash to u in (0, 1) and also returns 1-u, both
// exact: u = (m + 0.5) / 2^52 for the top 52 bits m.
func unitInterval(h uint64) (u, oneMinusU float64) {
	const scale = 1.0 / (1 << 52)
	m := h >> 12
	return (float64(m) + 0.5) * scale, (float64((1<<52)-1-m) + 0.5) * scale
}

// weightedScore is the weighted rendezvous score w / -ln(u): for
// independent uniform u per node, node n has the highest score with
// probability w_n / Σw.
func weightedScore(w, u float64) float64 { return w / -portableLog(u) }

// portableLog returns ln(x) for x in (0, 1). It is FreeBSD's e_log.c as in
// Go's math/log.go, but math.Log uses assembly on amd64 and s390x and pure Go
// elsewhere, which may round differently; mixed-architecture clusters must
// agree, so this copy uses only IEEE-exact operations, with float64
// conversions around every product so that no compiler fuses a
// multiply-add (the Go spec allows that on arm64, ppc64le, s390x...).
func portableLog(x float64) float64 {
	const (
		ln2Hi = 6.93147180369123816490e-01 /* 3fe62e42 fee00000 */
		ln2Lo = 1.90821492927058770002e-10 /* 3dea39ef 35793c76 */
		l1    = 6.666666666666735130e-01   /* 3FE55555 55555593 */
		l2    = 3.999999999940941908e-01   /* 3FD99999 9997FA04 */
		l3    = 2.857142874366239149e-01   /* 3FD24924 94229359 */
		l4    = 2.222219843214978396e-01   /* 3FCC71C5 1D8E78AF */
		l5    = 1.818357216161805012e-01   /* 3FC74664 96CB03DE */
		l6    = 1.531383769920937332e-01   /* 3FC39A09 D078C69F */
		l7    = 1.479819860511658591e-01   /* 3FC2F112 DF3E5244 */
	)
	// x is normal here (x >= 2^-53), so frexp is a bit split.
	bits := math.Float64bits(x)
	ki := int((bits>>52)&0x7ff) - 1022
	f1 := math.Float64frombits(bits&^(0x7ff<<52) | 1022<<52) // in [0.5, 1)
	if f1 < math.Sqrt2/2 {
		f1 *= 2
		ki--
	}
	f := f1 - 1
	k := float64(ki)

	s := f / (2 + f)
	s2 := float64(s * s)
	s4 := float64(s2 * s2)
	t1 := float64(s2 * (l1 + float64(s4*(l3+float64(s4*(l5+float64(s4*l7)))))))
	t2 := float64(s4 * (l2 + float64(s4*(l4+float64(s4*l6)))))
	r := t1 + t2
	hfsq := float64(float64(0.5*f) * f)
	return float64(k*ln2Hi) - ((hfsq - (float64(s*(hfsq+r)) + float64(k*ln2Lo))) - f)
}
