package fleet

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func one(string) int { return 1 }

func topicsN(n int, kind string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("v2.users.%08x-0000-4000-8000-%012d.%s", i, i, kind)
	}
	return out
}

func TestShardsFitAndCoverEveryTopic(t *testing.T) {
	topics := topicsN(5000, "presence")
	shards := Shards(topics, 1000, one)
	if len(shards) != 6 { // 5,000 at 900 a shard
		t.Fatalf("%d shards, want 6", len(shards))
	}
	seen := map[string]bool{}
	for i, s := range shards {
		if len(s) > 1000 {
			t.Errorf("shard %d holds %d topics, more than a channel", i, len(s))
		}
		for _, topic := range s {
			if seen[topic] {
				t.Errorf("%s in two shards", topic)
			}
			seen[topic] = true
		}
	}
	if len(seen) != len(topics) {
		t.Fatalf("%d topics placed, want %d", len(seen), len(topics))
	}
}

func TestShardsAreTheSameInAnyOrder(t *testing.T) {
	topics := topicsN(3000, "routingStatus")
	want := Shards(topics, 1000, one)
	shuffled := slices.Clone(topics)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, shuffled[:10]...) // duplicates count once
	got := Shards(shuffled, 1000, one)
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatal("a shuffled topic list was cut differently")
	}
}

// moved counts topics whose shard differs between two cuts.
func moved(a, b [][]string) int {
	where := map[string]int{}
	for i, s := range a {
		for _, t := range s {
			where[t] = i
		}
	}
	n := 0
	for i, s := range b {
		for _, t := range s {
			if j, ok := where[t]; ok && j != i {
				n++
			}
		}
	}
	return n
}

func TestShardsMoveFewTopicsWhenTheOrgChanges(t *testing.T) {
	topics := topicsN(5000, "presence")
	before := Shards(topics, 1000, one)
	added := append(slices.Clone(topics), topicsN(5020, "presence")[5000:]...)
	if n := moved(before, Shards(added, 1000, one)); n > 20 {
		t.Errorf("20 users added moved %d existing topics", n)
	}
	removed := slices.Delete(slices.Clone(topics), 100, 120)
	if n := moved(before, Shards(removed, 1000, one)); n > 20 {
		t.Errorf("20 users removed moved %d remaining topics", n)
	}
}

func TestShardsWeighCombinedSubscriptions(t *testing.T) {
	weight := func(t string) int {
		if _, q, ok := strings.Cut(t, "?"); ok {
			return strings.Count(q, "&") + 1
		}
		return 1
	}
	topics := topicsN(1800, "x?presence&routingStatus") // 3,600 subscriptions
	for i, s := range Shards(topics, 1000, weight) {
		w := 0
		for _, t := range s {
			w += weight(t)
		}
		if w > 1000 {
			t.Errorf("shard %d holds %d subscriptions", i, w)
		}
	}
}

func members(n int, client string) []Member {
	out := make([]Member, n)
	for i := range out {
		out[i] = Member{ID: fmt.Sprintf("app-%d", i), Node: fmt.Sprintf("node-%d", i%3), Client: client}
	}
	return out
}

func checkPlan(t *testing.T, p Plan, ms []Member, copies int) {
	t.Helper()
	load := map[string]int{}
	node := map[string]string{}
	for _, m := range ms {
		node[m.ID] = m.Node
		load[m.ID] = 0
	}
	for s, hs := range p.Holders {
		if len(hs) != min(copies, len(ms)) {
			t.Errorf("shard %d has %d holders, want %d", s, len(hs), min(copies, len(ms)))
		}
		if len(slices.Compact(slices.Sorted(slices.Values(hs)))) != len(hs) {
			t.Errorf("shard %d held twice by one member: %v", s, hs)
		}
		for _, h := range hs {
			load[h]++
		}
	}
	lo, hi := 1<<30, 0
	for _, n := range load {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 {
		t.Errorf("members hold %d to %d shards, more than one apart: %v", lo, hi, load)
	}
}

func TestAssignSpreadsEvenlyOnDistinctMembersAndNodes(t *testing.T) {
	budgets := map[string]int{"c1": 20}
	for n := 1; n <= 7; n++ {
		ms := members(n, "c1")
		p, err := Assign(6, 2, ms, budgets)
		if err != nil {
			t.Fatalf("%d members: %v", n, err)
		}
		checkPlan(t, p, ms, 2)
		if n >= 3 { // three nodes: a shard's two copies on two of them
			nodeOf := map[string]string{}
			for _, m := range ms {
				nodeOf[m.ID] = m.Node
			}
			for s, hs := range p.Holders {
				if nodeOf[hs[0]] == nodeOf[hs[1]] {
					t.Errorf("%d members: shard %d has both copies on %s", n, s, nodeOf[hs[0]])
				}
			}
		}
	}
}

func TestAssignIsTheSameInAnyOrder(t *testing.T) {
	ms := members(5, "c1")
	want, _ := Assign(6, 2, ms, map[string]int{"c1": 20})
	slices.Reverse(ms)
	got, _ := Assign(6, 2, ms, map[string]int{"c1": 20})
	if !slices.EqualFunc(got.Holders, want.Holders, slices.Equal) {
		t.Fatalf("plans differ with the member order: %v, %v", got.Holders, want.Holders)
	}
}

// changes counts shard copies whose holder differs between two plans.
func changes(a, b Plan) int {
	n := 0
	for s := range a.Holders {
		for _, h := range b.Holders[s] {
			if !slices.Contains(a.Holders[s], h) {
				n++
			}
		}
	}
	return n
}

func TestAssignMovesLittleWhenAMemberJoinsOrLeaves(t *testing.T) {
	budgets := map[string]int{"c1": 20}
	ms := members(5, "c1")
	four, _ := Assign(12, 2, ms[:4], budgets)
	five, _ := Assign(12, 2, ms, budgets)
	// 24 copies over 5 members: the newcomer's share is 4 or 5; a few more
	// move when the even-spread cap changes who may take what.
	if n := changes(four, five); n > 8 {
		t.Errorf("a member joining moved %d of 24 copies", n)
	}
	if n := changes(five, four); n > 8 {
		t.Errorf("a member leaving moved %d of 24 copies", n)
	}
}

func TestAssignKeepsEachClientsBudget(t *testing.T) {
	ms := append(members(3, "c1"), Member{ID: "other-0", Client: "c2"}, Member{ID: "other-1", Client: "c2"})
	budgets := map[string]int{"c1": 5, "c2": 20} // c1: 4 channels and its spare
	p, err := Assign(10, 2, ms, budgets)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	client := map[string]string{}
	for _, m := range ms {
		client[m.ID] = m.Client
	}
	for _, hs := range p.Holders {
		if len(hs) != 2 {
			t.Fatalf("a shard has %d holders", len(hs))
		}
		for _, h := range hs {
			per[client[h]]++
		}
	}
	if per["c1"] > 4 {
		t.Errorf("client c1 holds %d channels, budget 5 less its spare", per["c1"])
	}
}

func TestAssignRefusesAPlanPastTheBudgets(t *testing.T) {
	_, err := Assign(10, 2, members(5, "c1"), map[string]int{"c1": 20})
	var be *BudgetError
	if !asBudgetError(err, &be) {
		t.Fatalf("err = %v, want a BudgetError", err)
	}
	if be.Channels != 21 || be.Budget != 20 {
		t.Errorf("BudgetError = %+v", *be)
	}
	if !strings.Contains(err.Error(), "GCNATS_FLEET_COPIES") {
		t.Errorf("the error names no setting: %v", err)
	}
}

func asBudgetError(err error, target **BudgetError) bool {
	be, ok := err.(*BudgetError)
	*target = be
	return ok
}
