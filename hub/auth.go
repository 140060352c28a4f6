package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
	"github.com/switchboard-dev/switchboard/message"
)

// Permission is what a token may do on the topics its patterns cover.
type Permission string

// The permissions of a token. Admin on a topic implies publish and consume
// on it.
const (
	// PermPublish: Publish, PublishBatch and Request to the topic.
	PermPublish Permission = "publish"
	// PermConsume: Subscribe (gRPC, Connect, SSE), create a group on the
	// topic, describe the group and list its dead letters.
	PermConsume Permission = "consume"
	// PermAdmin: create and delete the topic; delete and reset groups on it;
	// replay and purge their dead letters.
	PermAdmin Permission = "admin"
)

// Token is one bearer token and what it may do. Patterns follow the topic
// pattern rules ('*' one segment, '>' one or more trailing segments); ">"
// covers every topic but the system ones ('$' prefix, e.g. dead letters),
// which need a pattern that starts with '$'.
type Token struct {
	// Name identifies the token in logs, metrics and error messages; never
	// the secret itself.
	Name string `json:"name"`
	// Token is the secret, as sent in "Authorization: Bearer <token>". Give
	// either Token or TokenSHA256.
	Token string `json:"token,omitempty"`
	// TokenSHA256 is the hex SHA-256 of the secret, so that the config file
	// need not hold it (e.g. printf %s "$T" | sha256sum).
	TokenSHA256 string `json:"token_sha256,omitempty"`
	// Publish, Consume and Admin list the topic patterns of each permission.
	Publish []string `json:"publish,omitempty"`
	Consume []string `json:"consume,omitempty"`
	Admin   []string `json:"admin,omitempty"`
	// Rate is the token's request rate limit per second (0: Auth.Rate);
	// Burst the most requests at once (0: Auth.Burst, or one second of Rate).
	Rate  float64 `json:"rate,omitempty"`
	Burst int     `json:"burst,omitempty"`
}

// Auth turns authentication on: every API request (gRPC, Connect, REST,
// SSE, GraphQL, SOAP) must carry one of Tokens as a bearer token. Health
// checks, gRPC reflection and (with PublicMetrics) /metrics stay open.
type Auth struct {
	Tokens []Token
	// Rate and Burst are the default per-token rate limit (requests per
	// second, and the bucket size); 0 means unlimited.
	Rate  float64
	Burst int
	// PublicMetrics serves /metrics without a token (for a scraper on a
	// private network). Default: /metrics needs any valid token.
	PublicMetrics bool
}

// principal is an authenticated token.
type principal struct {
	name    string
	key     [32]byte // SHA-256 of the secret: with name, the token's identity
	perms   map[Permission][]string
	limiter *bucket // nil: unlimited
}

// nameOf is p's token name, "" for nil (auth off).
func (p *principal) nameOf() string {
	if p == nil {
		return ""
	}
	return p.name
}

// authn holds the tokens by the SHA-256 of their secret.
type authn struct {
	byHash        map[[32]byte]*principal
	publicMetrics bool
}

func newAuthn(a *Auth) (*authn, error) {
	if a == nil {
		return nil, nil
	}
	if len(a.Tokens) == 0 {
		return nil, errors.New("hub config: Auth has no tokens; add at least one, or leave Auth nil to turn authentication off")
	}
	if a.Rate < 0 || a.Burst < 0 {
		return nil, errors.New("hub config: Auth rate and burst must not be negative")
	}
	out := &authn{byHash: map[[32]byte]*principal{}, publicMetrics: a.PublicMetrics}
	names := map[string]bool{}
	for i, t := range a.Tokens {
		where := fmt.Sprintf("token %d (%q)", i+1, t.Name)
		if t.Name == "" {
			return nil, fmt.Errorf("hub config: token %d has no name; name it (the name appears in logs instead of the secret)", i+1)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("hub config: %s: the name is used twice", where)
		}
		names[t.Name] = true
		var h [32]byte
		switch {
		case t.Token != "" && t.TokenSHA256 != "":
			return nil, fmt.Errorf("hub config: %s: give token or token_sha256, not both", where)
		case t.Token != "":
			if len(t.Token) < 16 {
				return nil, fmt.Errorf("hub config: %s: the secret has %d characters; use at least 16 (e.g. openssl rand -hex 32)", where, len(t.Token))
			}
			h = sha256.Sum256([]byte(t.Token))
		case t.TokenSHA256 != "":
			b, err := hex.DecodeString(t.TokenSHA256)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("hub config: %s: token_sha256 must be 64 hex digits (sha256sum of the secret)", where)
			}
			copy(h[:], b)
		default:
			return nil, fmt.Errorf("hub config: %s has no secret; set token or token_sha256", where)
		}
		if _, dup := out.byHash[h]; dup {
			return nil, fmt.Errorf("hub config: %s has the same secret as another token", where)
		}
		p := &principal{name: t.Name, key: h, perms: map[Permission][]string{}}
		for perm, pats := range map[Permission][]string{PermPublish: t.Publish, PermConsume: t.Consume, PermAdmin: t.Admin} {
			for _, pat := range pats {
				if err := message.ValidatePattern(pat); err != nil {
					return nil, fmt.Errorf("hub config: %s: %s pattern: %w", where, perm, err)
				}
			}
			p.perms[perm] = pats
		}
		if t.Rate < 0 || t.Burst < 0 {
			return nil, fmt.Errorf("hub config: %s: rate and burst must not be negative", where)
		}
		rate, burst := t.Rate, t.Burst
		if rate == 0 {
			rate = a.Rate
		}
		if burst == 0 {
			burst = a.Burst
		}
		if rate > 0 {
			if burst == 0 {
				burst = int(math.Max(1, math.Ceil(rate)))
			}
			p.limiter = newBucket(rate, burst)
		}
		out.byHash[h] = p
	}
	return out, nil
}

// lookup finds the principal of a presented secret. The map is keyed by the
// secret's SHA-256, so the lookup's timing says nothing useful about the
// secret.
func (a *authn) lookup(secret string) *principal {
	return a.byHash[sha256.Sum256([]byte(secret))]
}

// SetAuth replaces the hub's tokens at run time, atomically. a is checked
// as New checks Config.Auth; when it is invalid, SetAuth returns why and
// the tokens in use stay. Otherwise requests that arrive after SetAuth
// returns are checked against a, and requests in progress (but
// subscription streams, see below) finish with the token they were
// authenticated with. Rate, Burst and PublicMetrics of a apply too. A
// token that keeps its name, secret, rate and burst keeps its rate-limit
// bucket.
//
// A token is the same token only with the same name and the same secret:
// removing a token, renaming it or changing its secret revokes it. Open
// subscription streams (gRPC, gRPC-Web, Connect, SSE, GraphQL) are checked
// against a as well: a stream whose bearer token was revoked ends with
// Unauthenticated, and one whose token no longer holds consume on the
// stream's topic ends with PermissionDenied (an SSE stream ends with an
// "error" event carrying the code). The delivery tokens of an ended stream
// stop working at once (FailedPrecondition, UNKNOWN_DELIVERY) and the
// backend redelivers its unsettled messages. Any request (Ack, Settle, …)
// with a revoked bearer token fails with Unauthenticated (REST: 401).
//
// SetAuth does not turn authentication on or off, which needs a restart: a
// hub started without Config.Auth accepts only a nil or empty a (a no-op),
// and one started with it refuses a nil or empty a.
func (s *Server) SetAuth(a *Auth) error {
	empty := a == nil || len(a.Tokens) == 0
	switch {
	case !s.authOn && empty:
		return nil // auth stays off
	case !s.authOn:
		return errors.New("hub: cannot turn authentication on at run time: the hub started without tokens; restart it with the tokens in its config")
	case empty:
		return errors.New("hub: the new token set is empty, which would turn authentication off: keep at least one token (or restart the hub without tokens)")
	}
	next, err := newAuthn(a)
	if err != nil {
		return err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	prev := s.auth.Load()
	for key, p := range next.byHash {
		if old := prev.byHash[key]; old != nil && old.name == p.name && sameLimit(old.limiter, p.limiter) {
			p.limiter = old.limiter
		}
	}
	// Store first, then check the streams: a stream attached concurrently
	// is either seen here or checks itself against next (see attach).
	s.auth.Store(next)
	ended := s.tokens.endEach(func(st *subTokens) error { return next.streamErr(st.who, st.topic) })
	if ended > 0 {
		// Each ended stream has its own request log line (info level).
		s.cfg.Logger.Debug("tokens replaced: ended the subscription streams of revoked tokens", "streams", ended)
	}
	return nil
}

// sameLimit reports whether two limiters have the same rate and burst (or
// are both nil).
func sameLimit(a, b *bucket) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.rate == b.rate && a.burst == b.burst
}

// streamErr says why a stream subscribed to topic by who (a principal of an
// earlier token set, nil with auth off) may not go on under a; nil if it
// may.
func (a *authn) streamErr(who *principal, topic string) error {
	if a == nil || who == nil {
		return nil
	}
	p := a.byHash[who.key]
	if p == nil || p.name != who.name {
		return apiconv.NewError(connect.CodeUnauthenticated, apiconv.ReasonUnauthenticated,
			fmt.Sprintf("bearer token %q was revoked (the hub's tokens were replaced without it): the subscription ended, its unsettled deliveries will be redelivered; subscribe again with a valid token", who.name))
	}
	if !p.may(PermConsume, topic) {
		have := p.perms[PermConsume]
		if len(have) == 0 {
			have = []string{"none"}
		}
		return apiconv.NewError(connect.CodePermissionDenied, apiconv.ReasonPermissionDenied,
			fmt.Sprintf("token %q may no longer consume %s (the hub's tokens were replaced; its consume patterns are now [%s], admin: [%s]): the subscription ended, its unsettled deliveries will be redelivered",
				p.name, topic, strings.Join(have, " "), strings.Join(p.perms[PermAdmin], " ")))
	}
	return nil
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p *principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}

// may reports whether p holds perm on topic (a topic or a pattern): admin
// implies publish and consume.
func (p *principal) may(perm Permission, topic string) bool {
	for _, pat := range p.perms[perm] {
		if covers(pat, topic) {
			return true
		}
	}
	if perm != PermAdmin {
		return p.may(PermAdmin, topic)
	}
	return false
}

// mayAny reports whether p holds any permission on topic.
func (p *principal) mayAny(topic string) bool {
	return p.may(PermPublish, topic) || p.may(PermConsume, topic)
}

// covers reports whether permission pattern perm covers every topic that
// pat (a topic or a pattern) can name. For a plain topic it is
// message.Match(perm, pat).
func covers(perm, pat string) bool {
	if !strings.ContainsAny(pat, "*>") {
		return message.Match(perm, pat)
	}
	if perm == pat {
		return true
	}
	if strings.HasPrefix(pat, "$") && !strings.HasPrefix(perm, "$") {
		return false
	}
	ps, ts := strings.Split(perm, "."), strings.Split(pat, ".")
	for i, p := range ps {
		if p == ">" {
			return i < len(ts)
		}
		if i >= len(ts) {
			return false
		}
		switch {
		case p == "*":
			if ts[i] == ">" {
				return false
			}
		case p != ts[i]:
			return false
		}
	}
	return len(ps) == len(ts)
}

// authorize checks that the caller may do perm on topic. With auth off
// everything is allowed.
func (s *Server) authorize(ctx context.Context, perm Permission, topic string) error {
	if !s.authOn {
		return nil
	}
	p := principalFrom(ctx)
	if p == nil {
		return errUnauthenticated("no bearer token")
	}
	if p.may(perm, topic) {
		return nil
	}
	return errForbidden(p, perm, topic)
}

// authorizeAny checks that the caller holds some permission on topic.
func (s *Server) authorizeAny(ctx context.Context, topic string) error {
	if !s.authOn {
		return nil
	}
	p := principalFrom(ctx)
	if p == nil {
		return errUnauthenticated("no bearer token")
	}
	if p.mayAny(topic) {
		return nil
	}
	return errForbidden(p, PermConsume, topic)
}

// authorizeGroup checks perm on the topic (or pattern) a group follows.
func (s *Server) authorizeGroup(ctx context.Context, perm Permission, group string) error {
	if !s.authOn {
		return nil
	}
	p := principalFrom(ctx)
	if p == nil {
		return errUnauthenticated("no bearer token")
	}
	ga, ok := s.b.(broker.GroupAdmin)
	if !ok {
		// Without group administration the group's topic is unknown: only
		// an admin of every topic may act on it.
		if p.may(PermAdmin, ">") {
			return nil
		}
		return apiconv.NewError(connect.CodePermissionDenied, apiconv.ReasonPermissionDenied,
			fmt.Sprintf("token %q may not act on group %q: the backend cannot tell which topic the group follows, so this needs admin on \">\"", p.name, group))
	}
	gi, err := ga.DescribeGroup(ctx, group)
	if err != nil {
		return apiconv.ToConnect(fmt.Errorf("group %q: %w", group, err))
	}
	if p.may(perm, gi.Topic) {
		return nil
	}
	return errForbidden(p, perm, gi.Topic+" (followed by group "+group+")")
}

func errUnauthenticated(why string) *connect.Error {
	return apiconv.NewError(connect.CodeUnauthenticated, apiconv.ReasonUnauthenticated,
		why+`: send "Authorization: Bearer <token>" with a token from the hub's config file (CLI: --token or SWITCHBOARD_TOKEN; Go client: switchboard://host:port?token=…)`)
}

func errForbidden(p *principal, perm Permission, topic string) *connect.Error {
	have := p.perms[perm]
	if len(have) == 0 {
		have = []string{"none"}
	}
	return apiconv.NewError(connect.CodePermissionDenied, apiconv.ReasonPermissionDenied,
		fmt.Sprintf("token %q may not %s on %s: its %s patterns are [%s] (admin: [%s]); use a token whose %s patterns cover the topic, or add a pattern to this token in the hub's config file",
			p.name, perm, topic, perm, strings.Join(have, " "), strings.Join(p.perms[PermAdmin], " "), perm))
}

// bucket is a token bucket: rate tokens per second, at most burst saved.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// take spends one token. When none is left it returns false and how long
// until one is.
func (b *bucket) take(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	return false, wait
}
