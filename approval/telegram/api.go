package telegram

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The few Bot API types clawd reads and writes.

type user struct {
	ID        int64  `json:"id"`
	IsBot     bool   `json:"is_bot"`
	FirstName string `json:"first_name"`
	Username  string `json:"username,omitempty"`
}

type chat struct {
	ID   int64  `json:"id"`
	Type string `json:"type"`
}

type message struct {
	MessageID int64 `json:"message_id"`
	Chat      chat  `json:"chat"`
}

type callbackQuery struct {
	ID      string   `json:"id"`
	From    *user    `json:"from"`
	Message *message `json:"message,omitempty"`
	Data    string   `json:"data,omitempty"`
}

type update struct {
	UpdateID      int64          `json:"update_id"`
	CallbackQuery *callbackQuery `json:"callback_query,omitempty"`
}

type inlineButton struct {
	Text         string `json:"text"`
	CallbackData string `json:"callback_data"`
}

type keyboard struct {
	InlineKeyboard [][]inlineButton `json:"inline_keyboard"`
}

type linkPreview struct {
	IsDisabled bool `json:"is_disabled"`
}

type textRequest struct {
	ChatID      string      `json:"chat_id"`
	MessageID   int64       `json:"message_id,omitempty"` // editMessageText
	Text        string      `json:"text"`
	ParseMode   string      `json:"parse_mode"`
	LinkPreview linkPreview `json:"link_preview_options"`
	ReplyMarkup *keyboard   `json:"reply_markup,omitempty"`
}

// apiError is a Bot API answer with ok=false (or a non-JSON failure).
type apiError struct {
	Method      string
	Code        int
	Description string
	RetryAfter  int   // seconds (429)
	MigrateTo   int64 // the group became this supergroup
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("telegram %s: %d %s", e.Method, e.Code, e.Description)
	if e.MigrateTo != 0 {
		s += fmt.Sprintf(" (the group is now supergroup %d: set chat-id to it)", e.MigrateTo)
	}
	return s
}

// maxAnswer bounds a Bot API answer (getUpdates returns at most 100 updates).
const maxAnswer = 4 << 20

// call POSTs req as JSON to method and decodes the result into out. Errors
// never contain the token (it is part of the URL, which net/http errors
// quote).
func (c *Channel) call(ctx context.Context, hc *http.Client, method string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("telegram %s: encode: %w", method, err)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.apiBase+"/bot"+c.token+"/"+method, bytes.NewReader(body))
	if err != nil {
		return errors.New("telegram " + method + ": " + c.scrub(err.Error()))
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("telegram %s: %w", method, ctx.Err())
		}
		return errors.New("telegram " + method + ": " + c.scrub(err.Error()))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return errors.New("telegram " + method + ": reading the answer: " + c.scrub(err.Error()))
	}
	if len(raw) > maxAnswer {
		return fmt.Errorf("telegram %s: answer larger than %d bytes", method, maxAnswer)
	}
	var ans struct {
		OK          bool            `json:"ok"`
		Result      json.RawMessage `json:"result"`
		ErrorCode   int             `json:"error_code"`
		Description string          `json:"description"`
		Parameters  struct {
			RetryAfter      int   `json:"retry_after"`
			MigrateToChatID int64 `json:"migrate_to_chat_id"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return &apiError{Method: method, Code: resp.StatusCode, Description: "answer is not Bot API JSON (" + http.StatusText(resp.StatusCode) + ")"}
	}
	if !ans.OK {
		code := ans.ErrorCode
		if code == 0 {
			code = resp.StatusCode
		}
		return &apiError{Method: method, Code: code, Description: c.scrub(clip(ans.Description, 300)),
			RetryAfter: ans.Parameters.RetryAfter, MigrateTo: ans.Parameters.MigrateToChatID}
	}
	if out != nil {
		if err := json.Unmarshal(ans.Result, out); err != nil {
			return fmt.Errorf("telegram %s: unexpected result: %v", method, err)
		}
	}
	return nil
}

// scrub removes the bot token from a message.
func (c *Channel) scrub(s string) string {
	if c.token == "" {
		return s
	}
	return strings.ReplaceAll(s, c.token, "<bot-token>")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// notModified: an edit that changes nothing is answered 400 "message is not
// modified"; the card already shows what it should.
func notModified(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Code == http.StatusBadRequest && strings.Contains(ae.Description, "message is not modified")
}
