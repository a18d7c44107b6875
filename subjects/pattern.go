package subjects

// IDToken is what Pattern puts in place of an id token.
const IDToken = "{id}"

// Pattern returns topic with its id tokens replaced by {id}, for metric
// labels: v2.routing.queues.8f0c….conversations becomes
// v2.routing.queues.{id}.conversations. Its cardinality is that of the
// topic shapes subscribed, not of the entities. It works on subjects too.
// Pattern allocates its result; AppendPattern does not.
func Pattern(topic []byte) string { return string(AppendPattern(nil, topic)) }

// AppendPattern appends Pattern(topic) to dst.
//
// A token is an id when it is a UUID, all digits, or at least 12 letters,
// digits, '-' or '_' of which at least one is a digit (Genesys' other ids
// look like that; words like "conversations" or "v2" do not).
func AppendPattern(dst, topic []byte) []byte {
	for start := 0; start <= len(topic); {
		end := start
		for end < len(topic) && topic[end] != '.' {
			end++
		}
		if tok := topic[start:end]; isID(tok) {
			dst = append(dst, IDToken...)
		} else {
			dst = append(dst, tok...)
		}
		if end < len(topic) {
			dst = append(dst, '.')
		}
		start = end + 1
	}
	return dst
}

func isID(tok []byte) bool {
	if len(tok) == 0 {
		return false
	}
	if len(tok) == 36 && tok[8] == '-' && tok[13] == '-' && tok[18] == '-' && tok[23] == '-' {
		uuid := true
		for i, c := range tok {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				continue
			}
			if !isHex(c) {
				uuid = false
				break
			}
		}
		if uuid {
			return true
		}
	}
	digits, other := 0, 0
	for _, c := range tok {
		switch {
		case '0' <= c && c <= '9':
			digits++
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_':
			other++
		default:
			return false
		}
	}
	return other == 0 || digits > 0 && len(tok) >= 12
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
