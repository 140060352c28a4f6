package kafka

import (
	"slices"
	"strconv"
	"strings"
)

// The offset commit metadata of a partition records what the committed
// offset alone cannot: the records after it that are already done (acked
// out of order, dead-lettered) and the attempts made on records after it
// that were delivered but not settled. Format (text, at most metaMax bytes):
//
//	sb1;d=12-14,17;a=10:2,11:1
//
// d lists done offsets (ranges), a lists offset:attempts. When the list
// does not fit, the attempts are cut first, then the done ranges; a cut
// only means a record may be delivered again (at least once) or with a
// lower attempt number.
const (
	metaVersion = "sb1"
	metaMax     = 4000 // below Kafka's offset.metadata.max.bytes (4096)
)

func encodeMeta(ps *partState) string {
	var done []int64
	attempts := map[int64]int{}
	for _, r := range ps.recs {
		switch {
		case r.state == stDone:
			done = append(done, r.r.Offset)
		case r.attempts > 0:
			attempts[r.r.Offset] = r.attempts
		}
	}
	for o := range ps.restoredDone {
		if o >= ps.next {
			done = append(done, o)
		}
	}
	for o, n := range ps.restoredAttempts {
		if o >= ps.next {
			attempts[o] = n
		}
	}
	if len(done) == 0 && len(attempts) == 0 {
		return ""
	}
	slices.Sort(done)
	var sb strings.Builder
	sb.WriteString(metaVersion)
	if len(done) > 0 {
		sb.WriteString(";d=")
		for i := 0; i < len(done); {
			j := i
			for j+1 < len(done) && done[j+1] == done[j]+1 {
				j++
			}
			item := strconv.FormatInt(done[i], 10)
			if j > i {
				item += "-" + strconv.FormatInt(done[j], 10)
			}
			if sb.Len()+len(item)+1 > metaMax {
				break
			}
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(item)
			i = j + 1
		}
	}
	if len(attempts) > 0 {
		offs := make([]int64, 0, len(attempts))
		for o := range attempts {
			offs = append(offs, o)
		}
		slices.Sort(offs)
		sep := ";a="
		for _, o := range offs {
			item := sep + strconv.FormatInt(o, 10) + ":" + strconv.Itoa(attempts[o])
			if sb.Len()+len(item) > metaMax {
				break
			}
			sb.WriteString(item)
			sep = ","
		}
	}
	return sb.String()
}

// decodeMeta parses commit metadata; anything it does not understand (for
// example metadata written by another tool) is ignored.
func decodeMeta(s string) (done map[int64]bool, attempts map[int64]int) {
	parts := strings.Split(s, ";")
	if len(parts) == 0 || parts[0] != metaVersion {
		return nil, nil
	}
	done, attempts = map[int64]bool{}, map[int64]int{}
	for _, p := range parts[1:] {
		kind, list, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		for item := range strings.SplitSeq(list, ",") {
			switch kind {
			case "d":
				lo, hi, isRange := strings.Cut(item, "-")
				a, err := strconv.ParseInt(lo, 10, 64)
				if err != nil {
					continue
				}
				b := a
				if isRange {
					if b, err = strconv.ParseInt(hi, 10, 64); err != nil || b < a || b-a > 1<<20 {
						continue
					}
				}
				for o := a; o <= b; o++ {
					done[o] = true
				}
			case "a":
				o, n, ok := strings.Cut(item, ":")
				off, err1 := strconv.ParseInt(o, 10, 64)
				cnt, err2 := strconv.Atoi(n)
				if ok && err1 == nil && err2 == nil && cnt > 0 {
					attempts[off] = cnt
				}
			}
		}
	}
	return done, attempts
}
