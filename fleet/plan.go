package fleet

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// ShardFill is how full the fleet plans a shard: the rest of a channel's
// 1,000 topics is room for the org to grow (queues and users added)
// before the shard count, and with it the placement of about one topic in
// S, has to change.
const ShardFill = 0.9

// score ranks a candidate (a shard for a topic, a member for a shard) by
// rendezvous hashing: every member computes the same order from the same
// names, and adding or removing one candidate changes the first choice of
// only the keys that candidate wins or held. FNV-1a is stable across
// versions and processes, which a fleet of mixed builds needs.
func score(key string, candidate string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037) // FNV-1a, written out to hash without allocating
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	h *= prime // the separator, a zero byte
	for i := 0; i < len(candidate); i++ {
		h = (h ^ uint64(candidate[i])) * prime
	}
	return mix(h)
}

// mix spreads FNV's low-entropy high bits (splitmix64's finalizer), so
// that scores of similar names compare fairly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func shardName(i int) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return string(b[:])
}

// ShardCount is how many shards hold topics of the given total weight,
// each planned to ShardFill of capacity.
func ShardCount(total, capacity int) int {
	if total <= 0 {
		return 0
	}
	per := max(1, int(float64(capacity)*ShardFill))
	return (total + per - 1) / per
}

// Shards cuts topics into shards that each fit capacity (a channel's
// 1,000 subscriptions; weight says how many a topic uses). Every member
// computes the same cut from the same topics, in any order. A topic goes
// to the shard that ranks it highest with room left, topics taken in the
// order of their own hash: adding or removing a few topics moves about as
// many, not the rest, while the shard count stays.
func Shards(topics []string, capacity int, weight func(string) int) [][]string {
	total := 0
	for _, t := range topics {
		total += weight(t)
	}
	n := ShardCount(total, capacity)
	if n == 0 {
		return nil
	}
	type ranked struct {
		topic string
		order uint64
	}
	order := make([]ranked, 0, len(topics))
	for _, t := range topics {
		order = append(order, ranked{t, score("order", t)})
	}
	slices.SortFunc(order, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.topic, b.topic))
	})
	order = slices.CompactFunc(order, func(a, b ranked) bool { return a.topic == b.topic })

	names := make([]string, n)
	for i := range names {
		names[i] = shardName(i)
	}
	shards := make([][]string, n)
	load := make([]int, n)
	choices := make([]int, n)
	scores := make([]uint64, n)
	for _, r := range order {
		w := weight(r.topic)
		for i := range choices {
			choices[i] = i
			scores[i] = score(r.topic, names[i])
		}
		slices.SortFunc(choices, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
		placed := false
		for _, s := range choices {
			if load[s]+w <= capacity {
				shards[s] = append(shards[s], r.topic)
				load[s] += w
				placed = true
				break
			}
		}
		if !placed { // only a topic heavier than a whole channel; put it alone where it is least harmful
			s := slices.Index(load, slices.Min(load))
			shards[s] = append(shards[s], r.topic)
			load[s] += w
		}
	}
	for _, s := range shards {
		slices.Sort(s)
	}
	return shards
}

// Member is one sidecar of a fleet as the plan sees it.
type Member struct {
	ID     string // unique in the fleet: the pod's name and a start nonce
	Node   string // the Kubernetes node, where the downward API gives it; "" unknown
	Client string // the OAuth client whose channel budget it spends
}

// Plan is who holds what: Holders[s] are the members holding shard s,
// best first; a shard may have fewer than the copies asked for when the
// fleet has fewer members.
type Plan struct {
	Holders [][]string
}

// Held lists the shards a member holds.
func (p Plan) Held(member string) []int {
	var out []int
	for s, hs := range p.Holders {
		if slices.Contains(hs, member) {
			out = append(out, s)
		}
	}
	return out
}

// BudgetError is a plan the fleet's channel budgets cannot hold.
type BudgetError struct {
	Shards, Copies, Channels, Budget int
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("%d shards × %d copies need %d channels, and the fleet's OAuth clients hold %d (GCNATS_MAX_CHANNELS per client, less one spare each): subscribe to fewer topics, lower GCNATS_FLEET_COPIES, or add an OAuth client",
		e.Shards, e.Copies, e.Channels, e.Budget)
}

// Assign places copies of each of shards over members. Every member
// computes the same plan from the same member set, whatever its order:
//   - the two copies of a shard are never on one member, and preferably
//     not on one node;
//   - members hold within one shard of each other;
//   - a client's members hold at most budgets[client]-1 channels (one is
//     the client's rotation spare);
//   - a member joining or leaving moves about what it must: placement
//     follows each shard's rendezvous ranking of members.
//
// It fails with a BudgetError when the clients' budgets cannot hold
// shards × copies (or as many copies as there are members).
func Assign(shards, copies int, members []Member, budgets map[string]int) (Plan, error) {
	plan := Plan{Holders: make([][]string, shards)}
	if shards == 0 || len(members) == 0 {
		return plan, nil
	}
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	members = slices.CompactFunc(members, func(a, b Member) bool { return a.ID == b.ID })

	perShard := min(copies, len(members))
	need := shards * perShard
	clientCap := map[string]int{}
	capacity := 0
	for _, m := range members {
		if _, ok := clientCap[m.Client]; !ok {
			clientCap[m.Client] = max(0, budgets[m.Client]-1)
			capacity += clientCap[m.Client]
		}
	}
	if need > capacity {
		return plan, &BudgetError{Shards: shards, Copies: perShard, Channels: need + len(clientCap), Budget: capacity + len(clientCap)}
	}
	memberCap := (need + len(members) - 1) / len(members)
	load := map[string]int{}
	clientLoad := map[string]int{}

	// Copy-major: every shard's first holder is placed before any second,
	// so the first copies spread over the most members.
	for range perShard {
		for s := range shards {
			key := shardName(s)
			ranked := slices.Clone(members)
			slices.SortFunc(ranked, func(a, b Member) int {
				return cmp.Compare(score(key, b.ID), score(key, a.ID))
			})
			holders := plan.Holders[s]
			onNode := func(m Member) bool {
				if m.Node == "" {
					return false
				}
				for _, h := range holders {
					if i := slices.IndexFunc(members, func(x Member) bool { return x.ID == h }); members[i].Node == m.Node {
						return true
					}
				}
				return false
			}
			pick := func(spreadNodes, even bool) (Member, bool) {
				for _, m := range ranked {
					switch {
					case slices.Contains(holders, m.ID),
						clientLoad[m.Client] >= clientCap[m.Client],
						even && load[m.ID] >= memberCap,
						spreadNodes && onNode(m):
						continue
					}
					return m, true
				}
				return Member{}, false
			}
			m, ok := pick(true, true)
			if !ok {
				m, ok = pick(false, true)
			}
			if !ok {
				m, ok = pick(false, false)
			}
			if !ok {
				continue // the budgets are full; need ≤ capacity makes this rare (a client's members all hold this shard)
			}
			plan.Holders[s] = append(holders, m.ID)
			load[m.ID]++
			clientLoad[m.Client]++
		}
	}
	a := assignment{plan: plan, members: members, load: load, clientLoad: clientLoad, clientCap: clientCap}
	a.even()
	a.spreadNodes()
	return a.plan, nil
}

// assignment is a plan being repaired: the greedy placement by rank can
// leave members more than one shard apart, or a shard's copies on one
// node, when the caps steer its last choices.
type assignment struct {
	plan       Plan
	members    []Member // sorted by ID
	load       map[string]int
	clientLoad map[string]int
	clientCap  map[string]int
}

func (a *assignment) member(id string) Member {
	i, _ := slices.BinarySearchFunc(a.members, id, func(m Member, id string) int { return cmp.Compare(m.ID, id) })
	return a.members[i]
}

// even moves copies from the most loaded member to the least loaded one
// that may take them until every member is within one of the others. The
// most loaded holds more shards than the least, so it holds one the least
// does not: every move is possible unless the client budget forbids it.
func (a *assignment) even() {
	for range len(a.members) * len(a.plan.Holders) {
		byLoad := slices.Clone(a.members)
		slices.SortStableFunc(byLoad, func(x, y Member) int { return cmp.Compare(a.load[x.ID], a.load[y.ID]) })
		most := byLoad[len(byLoad)-1]
		moved := false
		for _, least := range byLoad {
			if a.load[most.ID]-a.load[least.ID] <= 1 {
				break
			}
			if least.Client != most.Client && a.clientLoad[least.Client] >= a.clientCap[least.Client] {
				continue
			}
			for _, hs := range a.plan.Holders {
				i := slices.Index(hs, most.ID)
				if i < 0 || slices.Contains(hs, least.ID) {
					continue
				}
				hs[i] = least.ID
				a.load[most.ID]--
				a.load[least.ID]++
				a.clientLoad[most.Client]--
				a.clientLoad[least.Client]++
				moved = true
				break
			}
			if moved {
				break
			}
		}
		if !moved {
			return
		}
	}
}

// nodeClash is the index in shard s of a holder on the same node as an
// earlier holder, or -1.
func (a *assignment) nodeClash(s int) int {
	hs := a.plan.Holders[s]
	for i := 1; i < len(hs); i++ {
		n := a.member(hs[i]).Node
		if n == "" {
			continue
		}
		for _, h := range hs[:i] {
			if a.member(h).Node == n {
				return i
			}
		}
	}
	return -1
}

// spreadNodes swaps holders between shards so that no shard has two
// copies on one node where another arrangement avoids it. A swap keeps
// every member's load, so it keeps the spread even and the budgets.
func (a *assignment) spreadNodes() {
	for s := range a.plan.Holders {
		i := a.nodeClash(s)
		if i < 0 {
			continue
		}
	swap:
		for t := range a.plan.Holders {
			if t == s {
				continue
			}
			for j, y := range a.plan.Holders[t] {
				x := a.plan.Holders[s][i]
				if slices.Contains(a.plan.Holders[s], y) || slices.Contains(a.plan.Holders[t], x) {
					continue
				}
				a.plan.Holders[s][i], a.plan.Holders[t][j] = y, x
				if a.nodeClash(s) < 0 && a.nodeClash(t) < 0 {
					break swap
				}
				a.plan.Holders[s][i], a.plan.Holders[t][j] = x, y
			}
		}
	}
}
