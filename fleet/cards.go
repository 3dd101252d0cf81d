package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Cards of Exclusive channels: the host holding a channel's lease posts a
// card for every pending approval of any host that asks the channel, and
// updates it whenever the approval's row changes (a vote, the decision, a
// timeout, an escalation, a restart), until once after it ended. The
// channel's ref is kept in clawd_cards, so a host taking the lease over
// updates the cards the previous one posted. Approval rows notify
// clawd_approvals when written; the heartbeat is the backstop.

// cardsChanged wakes the card keepers.
func (f *Fleet) cardsChanged() {
	f.mu.Lock()
	close(f.apprChanged)
	f.apprChanged = make(chan struct{})
	f.mu.Unlock()
}

func (f *Fleet) apprWait() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.apprChanged
}

// maxCardTries bounds how often one card is tried in a run of the keeper
// (a card the platform refuses is not tried every heartbeat forever).
const maxCardTries = 5

// keepCards keeps ch's cards until ctx ends.
func (f *Fleet) keepCards(ctx context.Context, ch approval.Channel) {
	tries := map[string]int{}
	for ctx.Err() == nil {
		wake := f.apprWait()
		if err := f.syncCards(ctx, ch, tries); err != nil && ctx.Err() == nil {
			f.log.Debug("fleet: cards", zap.String("channel", ch.Name()), zap.Error(f.failed(err)))
		}
		select {
		case <-ctx.Done():
		case <-wake:
		}
	}
}

type cardRow struct {
	data  []byte
	ref   *string
	shown *string
}

// syncCards posts the missing cards of ch and updates those whose
// approval changed since.
func (f *Fleet) syncCards(ctx context.Context, ch approval.Channel, tries map[string]int) error {
	name := ch.Name()
	qctx, cancel := context.WithTimeout(ctx, opTimeout)
	rows, err := f.pool.Query(qctx, `SELECT a.data, c.ref, c.shown
		FROM clawd_approvals a LEFT JOIN clawd_cards c ON c.approval_id = a.id AND c.channel = $1
		WHERE (a.status = $2 OR c.approval_id IS NOT NULL AND NOT c.final)
			AND a.data->'asked' @> jsonb_build_array(jsonb_build_object('channel', $1::text))
		ORDER BY a.created LIMIT 2000`, name, approval.Pending)
	var list []cardRow
	if err == nil {
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (cardRow, error) {
			var c cardRow
			return c, r.Scan(&c.data, &c.ref, &c.shown)
		})
	}
	cancel()
	if err != nil {
		return err
	}
	for _, r := range list {
		if ctx.Err() != nil {
			return nil
		}
		a, err := decode(r.data)
		if err != nil || a.ID == "" {
			continue
		}
		card := cardOf(name, a)
		fp := fingerprint(card)
		if r.shown != nil && *r.shown == fp {
			continue
		}
		if tries[a.ID] >= maxCardTries {
			continue
		}
		final := a.Status != approval.Pending
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		if r.ref == nil {
			ref, err := ch.Post(pctx, card)
			pcancel()
			if err != nil {
				tries[a.ID]++
				f.log.Warn("post approval card", zap.String("channel", name), zap.String("id", a.ID), zap.Error(err))
				continue
			}
			f.storeCard(ctx, a.ID, name, ref, fp, final)
			continue
		}
		err = ch.Update(pctx, card, *r.ref)
		pcancel()
		if err != nil {
			tries[a.ID]++
			f.log.Warn("update approval card", zap.String("channel", name), zap.String("id", a.ID), zap.Error(err))
			continue
		}
		f.storeCard(ctx, a.ID, name, *r.ref, fp, final)
	}
	return nil
}

func (f *Fleet) storeCard(ctx context.Context, id, channel, ref, shown string, final bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if _, err := f.pool.Exec(ctx, `INSERT INTO clawd_cards (approval_id, channel, ref, posted_by, shown, final)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (approval_id, channel) DO UPDATE SET shown = EXCLUDED.shown, final = EXCLUDED.final`,
		id, channel, ref, f.cfg.Host, shown, final); err != nil {
		f.log.Warn("keep card ref", zap.String("channel", channel), zap.String("id", id), zap.Error(f.failed(err)))
	}
}

// cardOf is the card of a for channel, as the holding host's Manager
// would build it: who on the channel is asked and where.
func cardOf(channel string, a *approval.Approval) *approval.Card {
	c := &approval.Card{Approval: a, Channel: channel, Now: time.Now()}
	for _, au := range a.Asked {
		if au.Channel == channel {
			c.People = slices.Clone(au.People)
			c.Target = au.Target
		}
	}
	return c
}

// fingerprint is what a card shows that can change, so an unchanged
// approval is not edited again.
func fingerprint(c *approval.Card) string {
	b, _ := json.Marshal(struct {
		Status, By, Reason, GrantID string
		Votes                       []approval.Vote
		People                      []string
		Target                      string
		Expires                     time.Time
	}{c.Status, c.By, c.Reason, c.GrantID, c.Votes, c.People, c.Target, c.Expires})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
