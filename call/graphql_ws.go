package call

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/graphql-go/graphql"
	"github.com/graphql-go/graphql/gqlerrors"
	"github.com/graphql-go/graphql/language/ast"
)

// The graphql-transport-ws protocol (the graphql-ws library's protocol):
// https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md
const wsSubprotocol = "graphql-transport-ws"

// wsInitTimeout is how long a client has to send connection_init.
var wsInitTimeout = 10 * time.Second

// Close codes of the protocol.
const (
	wsBadRequest      = 4400
	wsUnauthorized    = 4401
	wsNotAcceptable   = 4406
	wsInitTimeoutCode = 4408
	wsSubscriberExist = 4409
	wsTooManyInits    = 4429
)

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

type wsConn struct {
	g     *graphqlHandler
	c     *websocket.Conn
	hdr   http.Header
	mu    sync.Mutex
	ops   map[string]context.CancelFunc
	acked bool
	wg    sync.WaitGroup
}

func (g *graphqlHandler) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wsSubprotocol}})
	if err != nil {
		return // Accept has answered
	}
	if c.Subprotocol() != wsSubprotocol {
		_ = c.Close(wsNotAcceptable, "Subprotocol not acceptable: use graphql-transport-ws")
		return
	}
	c.SetReadLimit(g.s.cfg.maxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	wc := &wsConn{g: g, c: c, hdr: forwarded(r.Header), ops: map[string]context.CancelFunc{}}
	defer wc.wg.Wait()
	defer cancel()
	go func() {
		select {
		case <-g.s.away:
			_ = c.Close(websocket.StatusGoingAway, "server shutting down")
		case <-ctx.Done():
		}
	}()
	initTimer := time.AfterFunc(wsInitTimeout, func() {
		wc.mu.Lock()
		acked := wc.acked
		wc.mu.Unlock()
		if !acked {
			_ = c.Close(wsInitTimeoutCode, "Connection initialisation timeout")
		}
	})
	defer initTimer.Stop()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		var m wsMessage
		if err := json.Unmarshal(data, &m); err != nil || m.Type == "" {
			_ = c.Close(wsBadRequest, "Invalid message received")
			return
		}
		if !wc.handle(ctx, &m) {
			return
		}
	}
}

// handle processes one client message; false ends the connection.
func (wc *wsConn) handle(ctx context.Context, m *wsMessage) bool {
	switch m.Type {
	case "connection_init":
		wc.mu.Lock()
		again := wc.acked
		wc.acked = true
		wc.mu.Unlock()
		if again {
			_ = wc.c.Close(wsTooManyInits, "Too many initialisation requests")
			return false
		}
		return wc.send(ctx, wsMessage{Type: "connection_ack"})
	case "ping":
		return wc.send(ctx, wsMessage{Type: "pong"})
	case "pong":
		return true
	case "complete":
		wc.mu.Lock()
		if cancel, ok := wc.ops[m.ID]; ok {
			cancel()
			delete(wc.ops, m.ID)
		}
		wc.mu.Unlock()
		return true
	case "subscribe":
		return wc.subscribe(ctx, m)
	}
	_ = wc.c.Close(wsBadRequest, fmt.Sprintf("Invalid message type %q", m.Type))
	return false
}

func (wc *wsConn) subscribe(ctx context.Context, m *wsMessage) bool {
	wc.mu.Lock()
	acked := wc.acked
	_, dup := wc.ops[m.ID]
	wc.mu.Unlock()
	switch {
	case !acked:
		_ = wc.c.Close(wsUnauthorized, "Unauthorized")
		return false
	case m.ID == "":
		_ = wc.c.Close(wsBadRequest, "subscribe without an id")
		return false
	case dup:
		_ = wc.c.Close(wsSubscriberExist, "Subscriber for "+m.ID+" already exists")
		return false
	}
	var req gqlRequest
	if err := json.Unmarshal(m.Payload, &req); err != nil {
		_ = wc.c.Close(wsBadRequest, "Invalid subscribe payload")
		return false
	}
	p, errs := wc.g.prepare(&req)
	if errs != nil {
		return wc.sendJSON(ctx, m.ID, "error", errs)
	}
	opCtx, cancel := context.WithCancel(context.WithValue(ctx, headerKey{}, wc.hdr))
	wc.mu.Lock()
	wc.ops[m.ID] = cancel
	wc.mu.Unlock()
	wc.wg.Add(1)
	go func() {
		defer wc.wg.Done()
		defer cancel()
		params := graphql.ExecuteParams{Schema: wc.g.schema, AST: p.doc, OperationName: req.OperationName, Args: req.Variables, Context: opCtx}
		if p.opType == ast.OperationTypeSubscription {
			ch := graphql.ExecuteSubscription(params)
			for res := range ch {
				if opCtx.Err() != nil || !wc.sendJSON(ctx, m.ID, "next", resultJSON(res)) {
					cancel()
					for range ch { // let the executor's goroutine end
					}
					break
				}
			}
		} else {
			res := graphql.Execute(params)
			if opCtx.Err() == nil {
				wc.sendJSON(ctx, m.ID, "next", resultJSON(res))
			}
		}
		wc.mu.Lock()
		_, live := wc.ops[m.ID]
		delete(wc.ops, m.ID)
		wc.mu.Unlock()
		if live && ctx.Err() == nil {
			wc.send(ctx, wsMessage{ID: m.ID, Type: "complete"})
		}
	}()
	return true
}

func (wc *wsConn) sendJSON(ctx context.Context, id, typ string, payload any) bool {
	data, err := json.Marshal(payload)
	if err != nil {
		data, _ = json.Marshal([]gqlerrors.FormattedError{gqlerrors.NewFormattedError(err.Error())})
		typ = "error"
	}
	return wc.send(ctx, wsMessage{ID: id, Type: typ, Payload: data})
}

func (wc *wsConn) send(ctx context.Context, m wsMessage) bool {
	data, err := json.Marshal(m)
	if err != nil {
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return wc.c.Write(wctx, websocket.MessageText, data) == nil
}
