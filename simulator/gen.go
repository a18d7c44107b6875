package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pc "github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// generator builds event bodies: SDK topic models filled with plausible data
// and marshalled by the SDK's own MarshalJSON. Bodies are as unique as the
// models make them, no more: a model with a timestamp gets the event's
// time (from a strictly increasing microsecond clock), while one without
// (a queue member's {"id":…,"joined":true}) repeats byte for byte, as
// Genesys' do. A consumer must not take two equal bodies for one event.
type generator struct {
	org     *atomic.Pointer[org]
	seed    uint64
	padding int
	n       atomic.Uint64

	mu   sync.Mutex
	last time.Time
}

func newGenerator(o *atomic.Pointer[org], seed uint64, padding int) *generator {
	return &generator{org: o, seed: seed, padding: padding}
}

// tick returns a UTC time with microsecond precision (what the SDK's time
// format carries) strictly after every earlier tick.
func (g *generator) tick() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := time.Now().UTC().Truncate(time.Microsecond)
	if !t.After(g.last) {
		t = g.last.Add(time.Microsecond)
	}
	g.last = t
	return t
}

// evctx is what a builder knows about the event it builds.
type evctx struct {
	n     uint64 // generation number, for variety
	rnd   *rand.Rand
	now   time.Time
	topic string
	ids   []string // the topic's {id} values
	kinds []string // the literal before each {id}: "queues", "users", …
	org   *org     // one version for the whole event, however the org changes
}

func (e *evctx) uuid() string { return randUUID(e.rnd) }

// ago is a time d before the event, for start times and the like.
func (e *evctx) ago(d time.Duration) *time.Time {
	t := e.now.Add(-d)
	return &t
}

// id returns the topic's id that follows a literal of the given kind.
func (e *evctx) id(kinds ...string) (string, bool) {
	for i, k := range e.kinds {
		for _, want := range kinds {
			if k == want {
				return e.ids[i], true
			}
		}
	}
	return "", false
}

// queue is the topic's queue, or an org queue for topics not about one.
func (e *evctx) queue() queue {
	if id, ok := e.id("queues"); ok {
		if i, ok := e.org.queueByID[id]; ok {
			return e.org.queues[i]
		}
		if gone, ok := e.org.removed[id]; ok {
			return queue{Entity: gone}
		}
		return queue{Entity: Entity{ID: id, Name: "Queue " + id[:min(8, len(id))]}}
	}
	if len(e.org.queues) == 0 {
		return queue{Entity: Entity{ID: e.uuid(), Name: "General"}}
	}
	return e.org.queues[e.rnd.IntN(len(e.org.queues))]
}

// user is the topic's user, or an org user for topics not about one.
func (e *evctx) user() user {
	if id, ok := e.id("users"); ok {
		if i, ok := e.org.userByID[id]; ok {
			return e.org.users[i]
		}
		if gone, ok := e.org.removed[id]; ok {
			return user{Entity: gone}
		}
		return user{Entity: Entity{ID: id, Name: "User " + id[:min(8, len(id))]}}
	}
	return e.anyUser()
}

func (e *evctx) anyUser() user {
	if len(e.org.users) == 0 {
		return user{Entity: Entity{ID: e.uuid(), Name: "Agent"}}
	}
	return e.org.users[e.rnd.IntN(len(e.org.users))]
}

// member is the i-th agent for a conversation on q; any user when q has no
// members (a removed queue, or one added by AddQueue).
func (e *evctx) member(q queue, i int) user {
	if len(q.members) == 0 {
		return e.anyUser()
	}
	return e.org.users[q.members[(int(e.n)+i)%len(q.members)]]
}

func (e *evctx) phone() string { return fmt.Sprintf("tel:+1317555%04d", e.rnd.IntN(10000)) }

// built is a filled model, ready to marshal.
type built struct {
	model any
	// pad puts padding into a string field of the model ("" removes it);
	// nil if the model has no place for it.
	pad func(string)
	// as, when set, is the SDK type the body is finally marshalled as: the
	// model is marshalled, decoded into as, and marshalled again. Topic
	// families whose models share one shape reuse one builder this way and
	// still cannot drift from their own SDK type.
	as reflect.Type
}

func (b built) marshal() ([]byte, error) {
	raw, err := json.Marshal(b.model)
	if err != nil || b.as == nil {
		return raw, err
	}
	v := reflect.New(b.as)
	if err := json.Unmarshal(raw, v.Interface()); err != nil {
		return nil, err
	}
	return json.Marshal(v.Interface())
}

type builder func(*evctx) built

// builders fill the models of the topics gcnats is about; every other topic
// gets fillGeneric.
var builders = map[string]builder{
	"QueueConversationEventTopicConversation":         buildQueueConversation,
	"QueueConversationCallEventTopicCallConversation": buildQueueCallConversation,
	"QueueUserEventTopicQueueMember":                  buildQueueMember,
	"PresenceEventUserPresence":                       buildPresence,
	"UserRoutingStatusUserRoutingStatus":              buildRoutingStatus,
	"WrapupDetailEventTopicWrapupEvent":               buildWrapup,
	"ConversationEventTopicConversation": func(e *evctx) built {
		b := buildQueueConversation(e)
		b.as = reflect.TypeFor[pc.Conversationeventtopicconversation]()
		return b
	},
	"ConversationCallEventTopicCallConversation": func(e *evctx) built {
		b := buildQueueCallConversation(e)
		b.as = reflect.TypeFor[pc.Conversationcalleventtopiccallconversation]()
		return b
	},
}

// body builds the eventBody for one event on topic, padded as configured.
func (g *generator) body(topic string) ([]byte, error) {
	return g.paddedBody(topic, g.padding)
}

// paddedBody builds the eventBody for one event on topic, padded to at
// least padding bytes where its model has room.
func (g *generator) paddedBody(topic string, padding int) ([]byte, error) {
	n := g.n.Add(1)
	e := &evctx{
		n:     n,
		rnd:   rand.New(rand.NewPCG(g.seed, n)),
		now:   g.tick(),
		topic: topic,
		org:   g.org.Load(),
	}
	p, ids := topics.match(topic)
	if p == nil {
		// Not a topic Genesys knows (only Emit can ask for one): a minimal
		// body that is still unique.
		return json.Marshal(map[string]string{"id": e.uuid(), "timestamp": e.now.Format(time.RFC3339Nano)})
	}
	e.ids = ids
	e.kinds = idKinds(p.Pattern)

	b := g.build(e, p)
	if padding <= 0 || b.pad == nil {
		return b.marshal()
	}
	b.pad(padMarker)
	out, err := b.marshal()
	if err != nil {
		return nil, err
	}
	i := bytes.Index(out, []byte(`"`+padMarker+`"`))
	if i < 0 {
		return nil, fmt.Errorf("padding lost in the %s model", p.Class)
	}
	need := padding - (len(out) - len(padMarker))
	if need <= 0 {
		// Already as large as asked: no padding field at all.
		b.pad("")
		return b.marshal()
	}
	// The filler is plain ASCII that JSON carries verbatim, so splicing it
	// over the marker gives exactly the bytes marshalling it would, for one
	// marshal instead of two.
	res := make([]byte, 0, len(out)-len(padMarker)+need)
	res = append(res, out[:i+1]...)
	res = append(res, filler(need)...)
	res = append(res, out[i+1+len(padMarker):]...)
	return res, nil
}

// padMarker stands in for the padding while a padded body is marshalled.
const padMarker = "gcnats-simulator-padding-marker-3f9a1c"

func (g *generator) build(e *evctx, p *topicPattern) built {
	if b := builders[p.Class]; b != nil {
		return b(e)
	}
	return fillGeneric(e, p.Model)
}

// idKinds returns, for each {id} of a pattern, the literal segment before it.
func idKinds(pattern string) []string {
	var kinds []string
	prev := ""
	for seg := range strings.SplitSeq(pattern, ".") {
		if seg == "{id}" {
			kinds = append(kinds, prev)
			continue
		}
		prev = seg
	}
	return kinds
}

// optional is nil for "", so that an unset padding leaves no field.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

const fillerText = "Simulated padding to reach the configured body size. "

func filler(n int) string {
	var sb strings.Builder
	sb.Grow(n)
	for sb.Len() < n {
		sb.WriteString(fillerText[:min(len(fillerText), n-sb.Len())])
	}
	return sb.String()
}

// Conversation phases cycle so that filters see every state.
const (
	phaseQueued = iota
	phaseAlerting
	phaseConnected
	phaseWrapup
	phaseCount
)

func buildQueueConversation(e *evctx) built {
	q := e.queue()
	phase := int(e.n % phaseCount)
	agents := int((e.n / phaseCount) % 4) // 0..3, so 2..5 participants
	if phase != phaseQueued && agents == 0 {
		agents = 1
	}
	if _, ok := e.id("users"); ok && agents == 0 {
		agents = 1 // a user's conversation includes the user
	}
	dnis := "tel:+18005550100"
	ani := e.phone()
	callState := func(connected bool) *string {
		switch {
		case phase == phaseWrapup:
			return ptr("disconnected")
		case connected:
			return ptr("connected")
		default:
			return ptr("alerting")
		}
	}
	call := func(state *string, self, other string) []pc.Queueconversationeventtopiccall {
		return []pc.Queueconversationeventtopiccall{{
			Id:            ptr(e.uuid()),
			State:         state,
			InitialState:  ptr("alerting"),
			Recording:     ptr(false),
			Muted:         ptr(false),
			Confined:      ptr(false),
			Held:          ptr(false),
			SecurePause:   ptr(false),
			Direction:     ptr("inbound"),
			Provider:      ptr("Edge"),
			Self:          &pc.Queueconversationeventtopicaddress{AddressNormalized: ptr(self), AddressRaw: ptr(self)},
			Other:         &pc.Queueconversationeventtopicaddress{AddressNormalized: ptr(other), AddressRaw: ptr(other)},
			ConnectedTime: e.ago(85 * time.Second),
		}}
	}
	customer := pc.Queueconversationeventtopicparticipant{
		Id:            ptr(e.uuid()),
		ConnectedTime: e.ago(90 * time.Second),
		Name:          ptr("Customer " + ani[len(ani)-4:]),
		Purpose:       ptr("customer"),
		Address:       ptr(ani),
		Calls:         ptr(call(callState(true), ani, dnis)),
	}
	acdCalls := call(callState(agents == 0 || phase == phaseQueued), dnis, ani)
	acd := pc.Queueconversationeventtopicparticipant{
		Id:            ptr(e.uuid()),
		ConnectedTime: e.ago(88 * time.Second),
		Name:          ptr(q.Name),
		QueueId:       ptr(q.ID),
		Purpose:       ptr("acd"),
		Address:       ptr(dnis),
		ConversationRoutingData: &pc.Queueconversationeventtopicconversationroutingdata{
			Queue:    &pc.Queueconversationeventtopicurireference{Id: ptr(q.ID), Name: ptr(q.Name)},
			Priority: ptr(0),
		},
		Calls: &acdCalls,
	}
	if phase >= phaseConnected {
		acd.EndTime = e.ago(60 * time.Second)
		acdCalls[0].State = ptr("disconnected")
		acdCalls[0].DisconnectType = ptr("transfer")
	}
	parts := []pc.Queueconversationeventtopicparticipant{customer, acd}
	for i := range agents {
		u := e.member(q, i)
		if i == 0 {
			if _, ok := e.id("users"); ok {
				u = e.user()
			}
		}
		connected := phase >= phaseConnected && i == 0
		a := pc.Queueconversationeventtopicparticipant{
			Id:                ptr(e.uuid()),
			UserId:            ptr(u.ID),
			Name:              ptr(u.Name),
			QueueId:           ptr(q.ID),
			Purpose:           ptr("agent"),
			Address:           ptr("sip:" + u.ID + "@localhost"),
			WrapupRequired:    ptr(true),
			WrapupExpected:    ptr(true),
			WrapupPrompt:      ptr("optional"),
			WrapupTimeoutMs:   ptr(60000),
			AlertingTimeoutMs: ptr(8000),
			MediaRoles:        &[]string{"full"},
			Calls:             ptr(call(callState(connected), "sip:"+u.ID+"@localhost", ani)),
		}
		if connected {
			a.ConnectedTime = e.ago(58 * time.Second)
		}
		if phase == phaseWrapup && i == 0 {
			a.EndTime = e.ago(2 * time.Second)
			a.StartAcwTime = e.ago(2 * time.Second)
			a.Wrapup = &pc.Queueconversationeventtopicwrapup{
				Code:            ptr(wrapupCodes[e.n%uint64(len(wrapupCodes))]),
				Notes:           ptr("Resolved on first contact"),
				DurationSeconds: ptr(12 + int(e.n%30)),
				EndTime:         e.ago(time.Second),
			}
		}
		parts = append(parts, a)
	}
	conv := pc.Queueconversationeventtopicconversation{
		Id:                ptr(e.uuid()),
		MaxParticipants:   ptr(len(parts) + 2),
		Participants:      &parts,
		RecordingState:    ptr("none"),
		Address:           ptr(dnis),
		SecurePause:       ptr(false),
		InactivityTimeout: ptr(e.now.Add(72 * time.Hour)),
	}
	return built{model: conv, pad: func(s string) {
		parts[0].Attributes = nil
		if s != "" {
			parts[0].Attributes = &map[string]string{"simPadding": s}
		}
	}}
}

// wrapupCodes are stable ids so a routes filter can match one.
var wrapupCodes = []string{
	"7fb334b0-0e9e-11e4-9191-0800200c9a66", "0c9b6b4a-6b2f-4d0e-9f4e-0b5d1f3a2c11",
	"1e2d3c4b-5a69-4788-9766-554433221100", "a9b8c7d6-e5f4-4321-8fed-cba987654321",
}

func buildQueueCallConversation(e *evctx) built {
	q := e.queue()
	phase := int(e.n % phaseCount)
	agents := int((e.n / phaseCount) % 4)
	if phase != phaseQueued && agents == 0 {
		agents = 1
	}
	if _, ok := e.id("users"); ok && agents == 0 {
		agents = 1
	}
	dnis := "tel:+18005550100"
	ani := e.phone()
	state := func(connected bool) *string {
		switch {
		case phase == phaseWrapup:
			return ptr("disconnected")
		case connected:
			return ptr("connected")
		default:
			return ptr("alerting")
		}
	}
	qref := &pc.Queueconversationcalleventtopicurireference{Id: ptr(q.ID), Name: ptr(q.Name)}
	base := func(purpose, name, addr string, st *string) pc.Queueconversationcalleventtopiccallmediaparticipant {
		return pc.Queueconversationcalleventtopiccallmediaparticipant{
			Id:             ptr(e.uuid()),
			Name:           ptr(name),
			Address:        ptr(addr),
			StartTime:      e.ago(90 * time.Second),
			Purpose:        ptr(purpose),
			State:          st,
			InitialState:   ptr("alerting"),
			Direction:      ptr("inbound"),
			Held:           ptr(false),
			Provider:       ptr("Edge"),
			Muted:          ptr(false),
			Confined:       ptr(false),
			Recording:      ptr(false),
			RecordingState: ptr("none"),
			SecurePause:    ptr(false),
			Ani:            ptr(ani),
			Dnis:           ptr(dnis),
		}
	}
	customer := base("customer", "Customer "+ani[len(ani)-4:], ani, state(true))
	customer.ConnectedTime = e.ago(89 * time.Second)
	acd := base("acd", q.Name, dnis, state(agents == 0 || phase == phaseQueued))
	acd.Queue = qref
	acd.ConnectedTime = e.ago(88 * time.Second)
	if phase >= phaseConnected {
		acd.State = ptr("disconnected")
		acd.DisconnectType = ptr("transfer")
		acd.EndTime = e.ago(60 * time.Second)
	}
	parts := []pc.Queueconversationcalleventtopiccallmediaparticipant{customer, acd}
	for i := range agents {
		u := e.member(q, i)
		if i == 0 {
			if _, ok := e.id("users"); ok {
				u = e.user()
			}
		}
		connected := phase >= phaseConnected && i == 0
		a := base("agent", u.Name, "sip:"+u.ID+"@localhost", state(connected))
		a.User = &pc.Queueconversationcalleventtopicurireference{Id: ptr(u.ID), Name: ptr(u.Name)}
		a.Queue = qref
		a.WrapupRequired = ptr(true)
		a.WrapupPrompt = ptr("optional")
		a.WrapupTimeoutMs = ptr(60000)
		a.AlertingTimeoutMs = ptr(8000)
		a.MediaRoles = &[]string{"full"}
		if connected {
			a.ConnectedTime = e.ago(58 * time.Second)
		}
		if phase == phaseWrapup && i == 0 {
			a.EndTime = e.ago(2 * time.Second)
			a.StartAcwTime = e.ago(2 * time.Second)
			a.DisconnectType = ptr("client")
			a.Wrapup = &pc.Queueconversationcalleventtopicwrapup{
				Code:            ptr(wrapupCodes[e.n%uint64(len(wrapupCodes))]),
				Notes:           ptr("Resolved on first contact"),
				DurationSeconds: ptr(12 + int(e.n%30)),
				EndTime:         e.ago(time.Second),
			}
		}
		parts = append(parts, a)
	}
	conv := pc.Queueconversationcalleventtopiccallconversation{
		Id:                ptr(e.uuid()),
		Participants:      &parts,
		Address:           ptr(dnis),
		RecordingState:    ptr("none"),
		SecurePause:       ptr(false),
		MaxParticipants:   ptr(len(parts) + 2),
		InactivityTimeout: ptr(e.now.Add(72 * time.Hour)),
	}
	return built{model: conv, pad: func(s string) {
		parts[0].Attributes = nil
		if s != "" {
			parts[0].Attributes = &map[string]string{"simPadding": s}
		}
	}}
}

func buildQueueMember(e *evctx) built {
	q := e.queue()
	u := e.member(q, 0)
	// No timestamp: Genesys sends the same bytes each time an agent joins.
	m := &pc.Queueusereventtopicqueuemember{
		Id:      ptr(u.ID),
		User:    &pc.Queueusereventtopicuserreference{Id: ptr(u.ID)},
		QueueId: ptr(q.ID),
		Joined:  ptr(e.n%2 == 0),
	}
	return built{model: m, pad: func(s string) {
		m.AdditionalProperties = nil
		if s != "" {
			m.AdditionalProperties = &map[string]any{"simPadding": s}
		}
	}}
}

// SystemPresences and RoutingStatuses are the values presence and routing
// status events cycle through.
var (
	SystemPresences = []string{"AVAILABLE", "AWAY", "BUSY", "OFFLINE", "ON_QUEUE"}
	RoutingStatuses = []string{"IDLE", "INTERACTING", "NOT_RESPONDING", "OFF_QUEUE", "COMMUNICATING"}
)

// presenceDefinitionIDs are Genesys' well-known system presence ids.
var presenceDefinitionIDs = map[string]string{
	"AVAILABLE": "6a3af858-942f-489d-9700-5f9bcdcdae9b",
	"AWAY":      "5e5c5c66-ea97-4e7f-ac41-6424784829f2",
	"BUSY":      "31fe3bac-dea6-44b7-bed7-47f91660a1a0",
	"OFFLINE":   "ccf3c10a-aa2c-4845-8e8d-f59fa48c58e5",
	"ON_QUEUE":  "e08eaf1b-ee47-4fa9-a231-1200e284798f",
}

func buildPresence(e *evctx) built {
	sys := SystemPresences[e.n%uint64(len(SystemPresences))]
	p := pc.Presenceeventuserpresence{
		Source:             ptr("PURECLOUD"),
		PresenceDefinition: &pc.Presenceeventorganizationpresence{Id: ptr(presenceDefinitionIDs[sys]), SystemPresence: ptr(sys)},
		Primary:            ptr(true),
		ModifiedDate:       ptr(e.now),
	}
	return built{model: &p, pad: func(s string) { p.Message = optional(s) }}
}

func buildRoutingStatus(e *evctx) built {
	u := e.user()
	st := RoutingStatuses[e.n%uint64(len(RoutingStatuses))]
	return built{model: pc.Userroutingstatususerroutingstatus{
		Id:            ptr(u.ID),
		RoutingStatus: &pc.Userroutingstatusroutingstatus{Status: ptr(st), StartTime: ptr(e.now)},
	}}
}

func buildWrapup(e *evctx) built {
	conv, ok := e.id("conversation")
	if !ok {
		conv = e.uuid()
	}
	q := e.queue()
	w := pc.Wrapupdetaileventtopicwrapupevent{
		EventTime:        ptr(int(e.now.UnixMilli())),
		ConversationId:   ptr(conv),
		ParticipantId:    ptr(e.uuid()),
		SessionId:        ptr(e.uuid()),
		MediaType:        ptr("voice"),
		Provider:         ptr("Edge"),
		Direction:        ptr("inbound"),
		Ani:              ptr(e.phone()),
		Dnis:             ptr("tel:+18005550100"),
		QueueId:          ptr(q.ID),
		WrapupCode:       ptr(wrapupCodes[e.n%uint64(len(wrapupCodes))]),
		WrapupDurationMs: ptr(int(2000 + e.n%30000)),
	}
	return built{model: &w, pad: func(s string) { w.WrapupNotes = optional(s) }}
}

var (
	typeString    = reflect.TypeFor[*string]()
	typeTime      = reflect.TypeFor[*time.Time]()
	typeInt       = reflect.TypeFor[*int]()
	typeStringMap = reflect.TypeFor[*map[string]string]()
)

// genericDepth bounds how deep fillGeneric descends into nested objects.
const genericDepth = 3

// fillGeneric fills any topic model that has no builder, as far as that can
// be done without knowing its enums: ids (the topic's own where a field
// names the topic's entity), timestamps, and for conversation detail events
// their common call fields, descending into nested objects. Objects left
// empty are pruned.
func fillGeneric(e *evctx, t reflect.Type) built {
	f := &genericFiller{e: e, detail: strings.HasPrefix(e.topic, "v2.detail.events.conversation.")}
	v := reflect.New(t)
	f.fillStruct(v.Elem(), 0)
	prune(v.Elem())
	if v.Elem().IsZero() && f.free.IsValid() {
		// Nothing this filler knows applies (enums, free text): a constant
		// value keeps the body from being {} without making it unique.
		f.free.Set(reflect.ValueOf(ptr("simulated")))
		if f.free == f.pad {
			f.pad = reflect.Value{}
		}
	}
	b := built{model: v.Interface()}
	if pad := f.pad; pad.IsValid() {
		b.pad = func(p string) { pad.Set(reflect.ValueOf(optional(p))) }
	}
	return b
}

type genericFiller struct {
	e      *evctx
	detail bool
	// pad is a free top-level string: padding goes there. free is the first
	// free string at any depth, for a model nothing else fills.
	pad, free reflect.Value
}

func (f *genericFiller) fillStruct(s reflect.Value, depth int) {
	t := s.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.IsExported() && sf.Name != "SetFieldNames" {
			f.fillField(sf.Name, s.Field(i), depth)
		}
	}
}

func (f *genericFiller) fillField(name string, fv reflect.Value, depth int) {
	e := f.e
	set := func(val string) { fv.Set(reflect.ValueOf(ptr(val))) }
	ft := fv.Type()
	switch {
	case ft == typeTime:
		fv.Set(reflect.ValueOf(ptr(e.now)))
	case ft == typeInt:
		if name == "EventTime" {
			fv.Set(reflect.ValueOf(ptr(int(e.now.UnixMilli()))))
		} else {
			// Counts and percentages: small, and they repeat, as real ones do.
			fv.Set(reflect.ValueOf(ptr(e.rnd.IntN(100))))
		}
	case ft == typeString:
		switch {
		case name == "ConversationId":
			if id, ok := e.id("conversation", "conversations"); ok {
				set(id)
			} else {
				set(e.uuid())
			}
		case name == "QueueId":
			set(e.queue().ID)
		case name == "UserId":
			set(e.user().ID)
		case name == "DivisionId":
			set(e.org.division.ID)
		case name == "Id" || strings.HasSuffix(name, "Id"):
			set(e.uuid())
		case name == "Interval":
			// Analytics intervals are ISO-8601 "start/end".
			set(e.now.Format("2006-01-02T15:04:05.000000Z") + "/" + e.now.Add(30*time.Minute).Format("2006-01-02T15:04:05.000000Z"))
		case f.detail && name == "MediaType":
			set("voice")
		case f.detail && name == "Provider":
			set("Edge")
		case f.detail && name == "Direction":
			set("inbound")
		case f.detail && (name == "Ani" || name == "AddressFrom"):
			set(e.phone())
		case f.detail && (name == "Dnis" || name == "AddressTo"):
			set("tel:+18005550100")
		default:
			if depth == 0 && !f.pad.IsValid() {
				f.pad = fv
			}
			if !f.free.IsValid() {
				f.free = fv
			}
		}
	case ft == typeStringMap && name == "Group" && len(e.ids) > 0:
		// Stats notifications group by the topic's entity.
		key := strings.TrimSuffix(e.kinds[0], "s") + "Id"
		fv.Set(reflect.ValueOf(&map[string]string{key: e.ids[0]}))
	case depth < genericDepth && ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
		nv := reflect.New(ft.Elem())
		f.fillStruct(nv.Elem(), depth+1)
		fv.Set(nv)
	case depth < genericDepth && ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Slice &&
		ft.Elem().Elem().Kind() == reflect.Struct:
		sl := reflect.MakeSlice(ft.Elem(), 1, 1)
		f.fillStruct(sl.Index(0), depth+1)
		p := reflect.New(ft.Elem())
		p.Elem().Set(sl)
		fv.Set(p)
	}
}

// prune clears nested objects (and one-element lists of them) that ended up
// empty, and reports whether s itself is empty.
func prune(s reflect.Value) bool {
	empty := true
	t := s.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() || sf.Name == "SetFieldNames" {
			continue
		}
		fv := s.Field(i)
		if fv.Kind() != reflect.Pointer || fv.IsNil() {
			continue
		}
		switch el := fv.Elem(); {
		case el.Type() == typeTime.Elem():
		case el.Kind() == reflect.Struct:
			if prune(el) {
				fv.SetZero()
				continue
			}
		case el.Kind() == reflect.Slice && el.Type().Elem().Kind() == reflect.Struct:
			all := true
			for j := range el.Len() {
				all = prune(el.Index(j)) && all
			}
			if all {
				fv.SetZero()
				continue
			}
		}
		empty = false
	}
	return empty
}
