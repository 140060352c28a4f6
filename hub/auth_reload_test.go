package hub_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/hub"
)

const (
	tokPub2    = "publisher-two-secret-0123456789"
	tokRotated = "rotated-secret-0123456789abcdef"
	tokCons2   = "consumer-two-secret-0123456789"
)

// bearer adds "Authorization: Bearer <token>" to every request.
type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// rpcClient is a generated client (gRPC, gRPC-Web or Connect, by opts) that
// sends token with every call.
func rpcClient(t *testing.T, h *testHub, token string, opts ...connect.ClientOption) switchboardv1connect.SwitchboardServiceClient {
	t.Helper()
	hc := h2cClient()
	t.Cleanup(hc.CloseIdleConnections)
	hc.Transport = bearer{token: token, rt: hc.Transport}
	return switchboardv1connect.NewSwitchboardServiceClient(hc, h.URL, opts...)
}

var rpcProtocols = map[string][]connect.ClientOption{
	"grpc":     {connect.WithGRPC()},
	"grpc-web": {connect.WithGRPCWeb()},
	"connect":  nil,
}

func publishRPC(ctx context.Context, c switchboardv1connect.SwitchboardServiceClient, topic, text string) error {
	_, err := c.Publish(ctx, connect.NewRequest(&v1.PublishRequest{Topic: topic, Message: &v1.Message{Body: &v1.Message_Text{Text: text}}}))
	return err
}

// reloadedAuth is authConfig's token set after a rotation: pub removed,
// pub2 added, cons narrowed to orders.eu.>, admin and slow unchanged.
func reloadedAuth() *hub.Auth {
	return &hub.Auth{Tokens: []hub.Token{
		{Name: "pub2", Token: tokPub2, Publish: []string{"orders.>"}},
		{Name: "cons", Token: tokCons, Consume: []string{"orders.eu.>"}},
		{Name: "admin", Token: tokAdmin, Admin: []string{">", "$dlq.>"}},
		{Name: "slow", Token: tokSlow, Publish: []string{">"}, Rate: 0.001, Burst: 2},
	}}
}

// SetAuth replaces the tokens: a removed token is refused on REST and every
// RPC protocol, a new one works, a narrowed one is refused beyond its new
// patterns, an invalid set is refused whole and the tokens in use stay.
func TestSetAuthReplacesTokens(t *testing.T) {
	h := startHub(t, authConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub := "/v1/topics/orders.placed/messages"
	if code, _, body := h.do(t, tokPub, "POST", pub, `{"text": "before"}`); code != 200 {
		t.Fatalf("publish before the reload: %d %v", code, body)
	}
	for i := range 2 { // slow's burst, spent before the reload
		if code, _, body := h.do(t, tokSlow, "POST", "/v1/topics/t/messages", `{"text": "a"}`); code != 200 {
			t.Fatalf("slow request %d: %d %v", i, code, body)
		}
	}
	if code, _, body := h.do(t, tokCons, "POST", "/v1/groups", `{"group": "before", "topic": "orders.placed"}`); code != 200 {
		t.Fatalf("create group before the reload: %d %v", code, body)
	}

	if err := h.Server.SetAuth(reloadedAuth()); err != nil {
		t.Fatalf("SetAuth: %v", err)
	}

	// The removed token: 401 on REST, Unauthenticated on every RPC protocol.
	code, hdr, body := h.do(t, tokPub, "POST", pub, `{"text": "after"}`)
	problem(t, "removed token", code, body, 401, "UNAUTHENTICATED", "not one of this hub's tokens")
	if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: %v", hdr)
	}
	for name, opts := range rpcProtocols {
		err := publishRPC(ctx, rpcClient(t, h, tokPub, opts...), "orders.placed", "after")
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("%s with the removed token: %v, want Unauthenticated", name, err)
		}
		if err := publishRPC(ctx, rpcClient(t, h, tokPub2, opts...), "orders.placed", "new token"); err != nil {
			t.Fatalf("%s with the new token: %v", name, err)
		}
	}
	// The new token on REST.
	if code, _, body := h.do(t, tokPub2, "POST", pub, `{"text": "new"}`); code != 200 {
		t.Fatalf("new token: %d %v", code, body)
	}
	// The narrowed token: 403 beyond its new patterns, allowed within.
	code, _, body = h.do(t, tokCons, "POST", "/v1/groups", `{"group": "after", "topic": "orders.placed"}`)
	problem(t, "narrowed token", code, body, 403, "PERMISSION_DENIED", "orders.eu.>")
	code, _, body = h.do(t, tokCons, "GET", "/v1/groups/before", "")
	problem(t, "narrowed token describes its old group", code, body, 403, "PERMISSION_DENIED", "may not consume")
	if code, _, body := h.do(t, tokCons, "POST", "/v1/groups", `{"group": "eu", "topic": "orders.eu.placed"}`); code != 200 {
		t.Fatalf("narrowed token within its patterns: %d %v", code, body)
	}
	_, err := rpcClient(t, h, tokCons, connect.WithGRPC()).CreateGroup(ctx, connect.NewRequest(&v1.CreateGroupRequest{Group: "after2", Topic: "orders.placed"}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("gRPC with the narrowed token: %v, want PermissionDenied", err)
	}
	// An unchanged token keeps its rate-limit bucket: its burst was spent.
	code, _, body = h.do(t, tokSlow, "POST", "/v1/topics/t/messages", `{"text": "a"}`)
	problem(t, "unchanged token after the reload", code, body, 429, "RATE_LIMITED", "rate limit")

	// Invalid sets are refused whole; the tokens in use stay.
	for _, c := range []struct {
		name string
		auth *hub.Auth
		want string
	}{
		{"short secret", &hub.Auth{Tokens: []hub.Token{{Name: "pub2", Token: tokPub2, Publish: []string{">"}}, {Name: "x", Token: "short"}}}, "at least 16"},
		{"same name", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub}, {Name: "a", Token: tokCons}}}, "used twice"},
		{"bad pattern", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub, Consume: []string{"orders..x"}}}}, "consume pattern"},
		{"nil", nil, "at least one token"},
		{"empty", &hub.Auth{}, "at least one token"},
	} {
		if err := h.Server.SetAuth(c.auth); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetAuth(%s) = %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	if !h.Server.AuthEnabled() {
		t.Fatal("auth turned off by a refused SetAuth")
	}
	if code, _, body := h.do(t, tokPub2, "POST", pub, `{"text": "still"}`); code != 200 {
		t.Fatalf("token in use after a refused reload: %d %v", code, body)
	}
	if code, _, _ := h.do(t, tokPub, "POST", pub, `{"text": "still"}`); code != 401 {
		t.Fatalf("removed token after a refused reload: %d, want 401", code)
	}
	if code, _, _ := h.do(t, tokCons, "POST", "/v1/groups", `{"group": "after3", "topic": "orders.placed"}`); code != 403 {
		t.Fatalf("narrowed token after a refused reload: %d, want 403", code)
	}

	// A new secret under the same name revokes the old secret.
	rotated := reloadedAuth()
	rotated.Tokens[0].Token = tokRotated
	if err := h.Server.SetAuth(rotated); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := h.do(t, tokPub2, "POST", pub, `{"text": "old secret"}`); code != 401 {
		t.Fatalf("old secret of a rotated token: %d, want 401", code)
	}
	if code, _, body := h.do(t, tokRotated, "POST", pub, `{"text": "new secret"}`); code != 200 {
		t.Fatalf("new secret of a rotated token: %d %v", code, body)
	}
}

// SetAuth does not turn authentication on or off.
func TestSetAuthOnOff(t *testing.T) {
	open := startHub(t, nil)
	if err := open.Server.SetAuth(authConfig().Auth); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("turning auth on: %v, want an error saying a restart is needed", err)
	}
	if err := open.Server.SetAuth(nil); err != nil {
		t.Fatalf("SetAuth(nil) with auth off: %v, want nil (nothing changes)", err)
	}
	if open.Server.AuthEnabled() {
		t.Fatal("auth turned on")
	}
	if code, _, body := open.do(t, "", "POST", "/v1/topics/t/messages", `{"text": "a"}`); code != 200 {
		t.Fatalf("publish without token on an open hub: %d %v", code, body)
	}

	closed := startHub(t, authConfig())
	if err := closed.Server.SetAuth(nil); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("turning auth off: %v, want an error saying a restart is needed", err)
	}
	if code, _, _ := closed.do(t, "", "POST", "/v1/topics/orders.x/messages", `{"text": "a"}`); code != 401 {
		t.Fatalf("publish without token after a refused SetAuth(nil): %d, want 401", code)
	}
}

// openStream subscribes group on topic and waits for "subscribed".
func openStream(t *testing.T, ctx context.Context, c switchboardv1connect.SwitchboardServiceClient, topic, group string) *connect.ServerStreamForClient[v1.SubscribeResponse] {
	t.Helper()
	sub, err := c.Subscribe(ctx, connect.NewRequest(&v1.SubscribeRequest{
		Topic: topic, Group: group, Start: &v1.StartPosition{Position: &v1.StartPosition_Earliest{Earliest: true}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if !sub.Receive() || sub.Msg().GetSubscribed() == nil {
		t.Fatalf("subscribe %s: first event is not subscribed: %v %v", topic, sub.Msg(), sub.Err())
	}
	return sub
}

// nextDelivery receives the next delivery of a stream.
func nextDelivery(t *testing.T, sub *connect.ServerStreamForClient[v1.SubscribeResponse]) *v1.Delivery {
	t.Helper()
	for sub.Receive() {
		if d := sub.Msg().GetDelivery(); d != nil {
			return d
		}
		if ds := sub.Msg().GetDeliveries().GetDeliveries(); len(ds) > 0 {
			return ds[0]
		}
	}
	t.Fatalf("stream ended without a delivery: %v", sub.Err())
	return nil
}

// streamEnd reads a stream until it ends and returns its error.
func streamEnd(sub *connect.ServerStreamForClient[v1.SubscribeResponse]) error {
	for sub.Receive() {
	}
	return sub.Err()
}

// Replacing the tokens ends the open streams of a removed token
// (Unauthenticated) and of a token that lost consume on the stream's topic
// (PermissionDenied), on gRPC, Connect, SSE and the Go client; their
// delivery tokens stop working and their messages are redelivered. Other
// streams go on.
func TestSetAuthEndsStreams(t *testing.T) {
	h := startHub(t, &hub.Config{Auth: &hub.Auth{Tokens: []hub.Token{
		{Name: "pub", Token: tokPub, Publish: []string{">"}},
		{Name: "cons", Token: tokCons, Consume: []string{"orders.>"}},
		{Name: "cons2", Token: tokCons2, Consume: []string{"orders.>"}},
		{Name: "admin", Token: tokAdmin, Admin: []string{">"}},
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := rpcClient(t, h, tokPub, connect.WithGRPC())
	consGRPC := rpcClient(t, h, tokCons, connect.WithGRPC())
	cons2 := rpcClient(t, h, tokCons2) // Connect protocol
	admin := rpcClient(t, h, tokAdmin, connect.WithGRPC())

	// cons (to be removed): a gRPC stream with a delivery in hand, a Go
	// client subscription and an SSE stream.
	revoked := openStream(t, ctx, consGRPC, "orders.a", "ga")
	if err := publishRPC(ctx, pub, "orders.a", "a"); err != nil {
		t.Fatal(err)
	}
	dA := nextDelivery(t, revoked)
	gc, err := client.New(ctx, h.URL, client.WithToken(tokCons))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	goSub, err := gc.Subscribe(ctx, &broker.SubscribeParams{Topic: "orders.c", Group: "gc"})
	if err != nil {
		t.Fatal(err)
	}
	defer goSub.Close()
	sse := openSSE(t, ctx, h, tokCons, "/v1/topics/orders.d/groups/gd/events")

	// cons2 (to be narrowed to orders.eu.>): one stream outside, one inside.
	narrowed := openStream(t, ctx, cons2, "orders.b", "gb")
	if err := publishRPC(ctx, pub, "orders.b", "b"); err != nil {
		t.Fatal(err)
	}
	dB := nextDelivery(t, narrowed)
	kept := openStream(t, ctx, cons2, "orders.eu.x", "geu")
	// admin (unchanged).
	adminSub := openStream(t, ctx, admin, "orders.e", "ge")

	if err := h.Server.SetAuth(&hub.Auth{Tokens: []hub.Token{
		{Name: "pub", Token: tokPub, Publish: []string{">"}},
		{Name: "cons2", Token: tokCons2, Consume: []string{"orders.eu.>"}},
		{Name: "admin", Token: tokAdmin, Admin: []string{">"}},
	}}); err != nil {
		t.Fatal(err)
	}

	if err := streamEnd(revoked); connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("gRPC stream of the removed token ended with %v, want Unauthenticated (revoked)", err)
	}
	select {
	case d, ok := <-goSub.Deliveries():
		if ok {
			t.Fatalf("Go client subscription of the removed token got a delivery: %v", d.Message)
		}
	case <-ctx.Done():
		t.Fatal("Go client subscription of the removed token did not end")
	}
	if err := goSub.Err(); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Go client subscription of the removed token: Err() = %v, want it revoked", err)
	}
	if ev := sseUntilError(t, sse); !strings.Contains(ev, `"code":16`) || !strings.Contains(ev, "revoked") {
		t.Fatalf("SSE stream of the removed token ended with %q, want code 16 (unauthenticated)", ev)
	}
	if err := streamEnd(narrowed); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "no longer consume orders.b") {
		t.Fatalf("stream of the narrowed token ended with %v, want PermissionDenied", err)
	}

	// Settling with the removed token: 401; the narrowed token's delivery
	// token is gone with its stream.
	code, _, body := h.do(t, tokCons, "POST", "/v1/deliveries/"+dA.GetToken()+":ack", `{}`)
	problem(t, "ack with the removed token", code, body, 401, "UNAUTHENTICATED", "not one of this hub's tokens")
	_, err = consGRPC.Settle(ctx, connect.NewRequest(&v1.SettleRequest{Settlements: []*v1.Settlement{{Token: dA.GetToken(), Op: v1.Settlement_ACK}}}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("Settle with the removed token: %v, want Unauthenticated", err)
	}
	_, err = cons2.Ack(ctx, connect.NewRequest(&v1.AckRequest{Token: dB.GetToken()}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("ack of the ended stream's delivery: %v, want FailedPrecondition (unknown delivery)", err)
	}
	// A new stream of the removed token is refused.
	_, err = gc.Subscribe(ctx, &broker.SubscribeParams{Topic: "orders.c", Group: "gc"})
	if err == nil || !strings.Contains(err.Error(), "not one of this hub's tokens") {
		t.Fatalf("subscribe with the removed token: %v", err)
	}

	// The other streams go on.
	for _, c := range []struct {
		topic string
		sub   *connect.ServerStreamForClient[v1.SubscribeResponse]
	}{{"orders.eu.x", kept}, {"orders.e", adminSub}} {
		if err := publishRPC(ctx, pub, c.topic, "still here"); err != nil {
			t.Fatal(err)
		}
		if d := nextDelivery(t, c.sub); d.GetMessage().GetText() != "still here" {
			t.Fatalf("%s: delivery %v", c.topic, d)
		}
	}
	// The unsettled messages of the ended streams are redelivered.
	for group, topic := range map[string]string{"ga": "orders.a", "gb": "orders.b"} {
		d := nextDelivery(t, openStream(t, ctx, admin, topic, group))
		if d.GetMessage().GetText() != topic[len("orders."):] {
			t.Fatalf("group %s: redelivered %v", group, d)
		}
	}
}

// openSSE opens an event stream with token and reads up to "subscribed".
func openSSE(t *testing.T, ctx context.Context, h *testHub, token, path string) *bufio.Scanner {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events %s: %d %s", path, resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "event: subscribed" {
			return sc
		}
	}
	t.Fatalf("events %s: no subscribed event: %v", path, sc.Err())
	return nil
}

// sseUntilError reads events until an "error" event and returns its data.
func sseUntilError(t *testing.T, sc *bufio.Scanner) string {
	t.Helper()
	for sc.Scan() {
		if sc.Text() == "event: error" && sc.Scan() {
			return sc.Text()
		}
	}
	t.Fatalf("event stream ended without an error event: %v", sc.Err())
	return ""
}

// Requests and stream openings race with many reloads (run with -race): a
// token in every set always works, one in every other set works or gets
// 401, and once the last set drops it, every stream it opened has ended.
func TestSetAuthConcurrent(t *testing.T) {
	const (
		tokSteady = "steady-secret-0123456789abcdef"
		tokFlip   = "flip-secret-0123456789abcdefgh"
	)
	steady := hub.Token{Name: "steady", Token: tokSteady, Publish: []string{">"}, Consume: []string{">"}}
	flip := hub.Token{Name: "flip", Token: tokFlip, Publish: []string{">"}, Consume: []string{">"}}
	with := &hub.Auth{Tokens: []hub.Token{steady, flip}}
	without := &hub.Auth{Tokens: []hub.Token{steady}}
	h := startHub(t, &hub.Config{Auth: with})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var stop atomic.Bool
	var wg sync.WaitGroup
	var flipOK, flipRefused atomic.Int64
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer hc.CloseIdleConnections()
	publish := func(token string, i int) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", h.URL+"/v1/topics/load/messages", strings.NewReader(fmt.Sprintf(`{"text": "%d"}`, i)))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				code, err := publish(tokSteady, i)
				if err != nil || code != 200 {
					t.Errorf("worker %d: steady token: %d %v", w, code, err)
					return
				}
				switch code, err := publish(tokFlip, i); {
				case err != nil:
					t.Errorf("worker %d: flip token: %v", w, err)
					return
				case code == 200:
					flipOK.Add(1)
				case code == 401:
					flipRefused.Add(1)
				default:
					t.Errorf("worker %d: flip token: %d, want 200 or 401", w, code)
					return
				}
			}
		})
	}
	// Streams of the flip token opened and ended over and over; each
	// streamer returns once its token is refused after stop.
	var streamers sync.WaitGroup
	var ended atomic.Int64
	for w := range 4 {
		c := rpcClient(t, h, tokFlip, connect.WithGRPC())
		streamers.Go(func() {
			for ctx.Err() == nil {
				sub, err := c.Subscribe(ctx, connect.NewRequest(&v1.SubscribeRequest{Topic: fmt.Sprintf("load.%d", w)}))
				if err != nil {
					t.Errorf("streamer %d: %v", w, err)
					return
				}
				err = streamEnd(sub)
				_ = sub.Close()
				switch connect.CodeOf(err) {
				case connect.CodeUnauthenticated:
					ended.Add(1)
					if stop.Load() && strings.Contains(err.Error(), "not one of this hub's tokens") {
						return // refused at the door: the last set is in force
					}
				default:
					t.Errorf("streamer %d: stream ended with %v, want Unauthenticated", w, err)
					return
				}
			}
		})
	}
	for i := range 200 {
		var err error
		if i%2 == 0 {
			err = h.Server.SetAuth(without)
		} else {
			err = h.Server.SetAuth(with)
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.Server.SetAuth(without); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()
	done := make(chan struct{})
	go func() { streamers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatal("a stream of the removed token did not end after the last reload")
	}
	if code, err := publish(tokFlip, 0); err != nil || code != 401 {
		t.Fatalf("removed token after the last reload: %d %v, want 401", code, err)
	}
	t.Logf("flip token: %d accepted, %d refused; %d streams ended", flipOK.Load(), flipRefused.Load(), ended.Load())
}
