package redis

import (
	"context"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// publishScript stores messages of one stream, each atomically with its
// dedup check: GET the dedup key (a hit returns the original entry ID as a
// duplicate), XADD the entry, SET the dedup key to the entry ID for the
// window. KEYS: the stream, then one dedup key per message. ARGV: window
// ms, max len, then per message its field count and fields. It returns two
// items per message: the entry ID and 0 (stored) or 1 (duplicate), or an
// error text and 2. A message that fails does not stop the others
// (redis.pcall), so each caller whose messages share the call learns its
// own outcome.
var publishScript = goredis.NewScript(`
local window = ARGV[1]
local maxlen = ARGV[2]
local capped = tonumber(maxlen) > 0
local stream = KEYS[1]
local rcall = redis.pcall
local out = {}
local o = 0
local a = 3
for i = 2, #KEYS do
  local n = tonumber(ARGV[a])
  local key = KEYS[i]
  local id = rcall('GET', key)
  local code = 1
  if id == false then
    code = 0
    if capped then
      id = rcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, a + 1, a + n))
    else
      id = rcall('XADD', stream, '*', unpack(ARGV, a + 1, a + n))
    end
    if type(id) ~= 'table' then
      local ok = rcall('SET', key, id, 'PX', window)
      if type(ok) == 'table' and ok.err then
        id = {err = 'stored as ' .. id .. ' but its dedup key was not set: ' .. ok.err}
      end
    end
  end
  if type(id) == 'table' then
    id = id.err
    code = 2
  end
  out[o + 1] = id
  out[o + 2] = code
  o = o + 2
  a = a + n + 1
end
return out
`)

// Limits of one publish script call: concurrent publishes to a stream are
// merged into one call up to these (a single larger Publish still runs as
// one call), so that no call keeps the server busy for long.
const (
	scriptMaxMessages = 256
	scriptMaxBytes    = 1 << 20
)

// pubReq is one Publish waiting in the broker's batcher.
type pubReq struct {
	request
	key   string   // the stream
	dedup []string // the dedup key of each message
	msgs  []*message.Message
	res   []broker.MessageResult // set on success
}

func (r *pubReq) req() *request { return &r.request }

// xadd stores msgs on topic through the batcher and returns when the
// server has answered for them (or ctx ended, which abandons the wait, not
// necessarily the write). res, when not nil, gets one result per message.
// dedupKey names each message's dedup key (without the prefix).
func (b *Broker) xadd(ctx context.Context, topic string, msgs []*message.Message, dedupKey func(*message.Message) string, res *broker.PublishResult) (*broker.PublishResult, error) {
	r := &pubReq{request: newRequest(ctx), key: b.key(topic), msgs: msgs, dedup: make([]string, len(msgs))}
	for i, m := range msgs {
		r.dedup[i] = b.cfg.prefix + dedupKey(m)
	}
	if !b.ops.do(r) {
		return nil, fmt.Errorf("%s: publish to %s: %w", b.caps.Name, topic, broker.ErrClosed)
	}
	if err := r.wait(); err != nil {
		return nil, b.opErr(ctx, "publish to "+topic, err)
	}
	if res != nil {
		copy(res.Results, r.res)
	}
	return res, nil
}

// pubBatch is the publishes of one batch: each stream's requests merged
// into script calls (a request is never split, and requests keep their
// order).
type pubBatch struct {
	calls []*scriptCall
	open  map[string]*scriptCall // the call of each stream still taking requests
}

// scriptCall is one publish script call: the requests it stores, in order.
type scriptCall struct {
	reqs  []*pubReq
	keys  []string
	args  []any
	msgs  int
	bytes int
	cmd   *goredis.Cmd
}

func (p *pubBatch) add(b *Broker, r *pubReq) {
	c := p.open[r.key]
	if c == nil || c.msgs+len(r.msgs) > scriptMaxMessages || c.bytes > scriptMaxBytes {
		c = &scriptCall{keys: []string{r.key}, args: []any{b.cfg.dedupWindow.Milliseconds(), b.cfg.maxLen}}
		if p.open == nil {
			p.open = map[string]*scriptCall{}
		}
		p.open[r.key] = c
		p.calls = append(p.calls, c)
	}
	c.reqs = append(c.reqs, r)
	c.keys = append(c.keys, r.dedup...)
	for _, m := range r.msgs {
		c.args = appendFields(c.args, m)
		c.bytes += len(m.Payload)
	}
	c.msgs += len(r.msgs)
}

// queue adds the calls to pipe.
func (p *pubBatch) queue(ctx context.Context, pipe goredis.Pipeliner) {
	for _, c := range p.calls {
		c.cmd = publishScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
}

// retry runs again the calls refused with NOSCRIPT (a restarted or flushed
// server lost the script; such a call did nothing) after loading the
// script.
func (p *pubBatch) retry(ctx context.Context, rdb *goredis.Client) {
	var again pubBatch
	for _, c := range p.calls {
		if err := c.cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			again.calls = append(again.calls, c)
		}
	}
	if len(again.calls) == 0 || publishScript.Load(ctx, rdb).Err() != nil {
		return
	}
	pipe := rdb.Pipeline()
	again.queue(ctx, pipe)
	_, _ = pipe.Exec(ctx) // each command carries its own error
}

// finish hands each request its results, or its error.
func (p *pubBatch) finish() {
	for _, c := range p.calls {
		c.finish()
	}
}

// finish hands each request of the call its results, or its error.
func (c *scriptCall) finish() {
	out, err := c.cmd.Slice()
	if err == nil && len(out) != 2*c.msgs {
		err = fmt.Errorf("publish script answered %d items for %d messages", len(out), c.msgs)
	}
	if err != nil {
		for _, r := range c.reqs {
			r.finish(err)
		}
		return
	}
	for _, r := range c.reqs {
		r.res = make([]broker.MessageResult, len(r.msgs))
		var rerr error
		for i, m := range r.msgs {
			s, _ := out[0].(string)
			code, _ := out[1].(int64)
			out = out[2:]
			switch code {
			case 0, 1:
				seq, _ := seqOf(s)
				r.res[i] = broker.MessageResult{ID: m.ID, Seq: seq, Duplicate: code == 1}
			default:
				if rerr == nil {
					rerr = fmt.Errorf("message %s: %s", m.ID, s)
				}
			}
		}
		r.finish(rerr)
	}
}

// appendFields appends the field count of m's stream entry and then its
// field/value list: the payload as "Sb-Body", then the envelope and the
// headers.
func appendFields(args []any, m *message.Message) []any {
	at := len(args)
	args = append(args, 0, bodyField, m.Payload)
	brokerutil.Encode(m, time.Time{}, func(k, v string) { args = append(args, k, v) })
	args[at] = len(args) - at - 1
	return args
}
