package engine

import (
	"fmt"

	"github.com/edged/edged/accel"
)

// forward computes one slice of at most BatchSize rows through the layers
// of sp (see run).
func (e *Engine) forward(batch []Entry, sp span, x, logits []float32) error {
	// The embedding lives on the first stage, whichever runs layer 0.
	if sp.from == 0 {
		e.use(e.stages[0])
	} else {
		e.use(e.stageOf(sp.from))
	}
	a, be := e.act, e.be
	n := len(batch)
	ids, pos, rows := a.ids[:n], a.pos[:n], a.rows[:n]
	for i, en := range batch {
		ids[i], pos[i] = en.Token, en.Pos
		rows[i] = Row{Seq: en.Seq, Pos: en.Pos, Logits: en.Logits}
	}
	if sp.from == 0 {
		be.Embed(a.x, e.w.tokEmbd, ids)
	} else {
		be.Write(a.x, 0, x)
	}
	hidden, _ := e.opts.Hooks.Observer.(HiddenObserver)
	for l := sp.from; l < sp.to; l++ {
		if s := e.stageOf(l); s.be != e.be {
			e.moveTo(s, len(rows))
		}
		if hidden != nil && hidden.WantsHidden(l) {
			e.observeHidden(hidden, l, rows)
		}
		if err := e.layer(l, rows, pos); err != nil {
			return err
		}
		if e.opts.Hooks.Selector != nil {
			rows, pos = e.selectRows(l, rows, pos)
		}
	}
	// The first layer run sees every row, whatever a selector drops later.
	for _, en := range batch {
		en.Seq.tokens = en.Seq.n[sp.from] - en.Seq.prefix
	}
	if sp.to < e.cfg.NLayer {
		if len(rows) != n {
			return fmt.Errorf("%w: a token selector dropped rows before layer %d", ErrBatch, sp.to)
		}
		e.be.Read(x, e.act.x, 0)
		return nil
	}
	return e.output(rows, logits)
}

// moveTo carries the residual stream of n rows to stage s and computes
// there from now on.
func (e *Engine) moveTo(s *stage, n int) {
	size := n * e.cfg.NEmbd
	if cap(e.xfer) < size {
		e.xfer = make([]float32, size)
	}
	e.be.Read(e.xfer[:size], e.act.x, 0)
	e.use(s)
	e.be.Write(e.act.x, 0, e.xfer[:size])
}

// layer runs transformer block l over rows, updating the residual stream
// a.x in place.
func (e *Engine) layer(l int, rows []Row, pos []int32) error {
	a, c, be, w := e.act, &e.cfg, e.be, &e.w.layers[l]
	n := len(rows)

	// Attention: x += Wo · attn(rope(Wq·xn), rope(Wk·xn), Wv·xn).
	be.RMSNorm(a.xn, a.x, w.attnNorm, n, c.RMSEps)
	if err := e.project(l, a.xn, rows,
		projection{ProjQ, a.q, w.wq, w.bq}, projection{ProjK, a.k, w.wk, w.bk}, projection{ProjV, a.v, w.wv, w.bv}); err != nil {
		return err
	}
	if ko, ok := e.opts.Hooks.Observer.(KeyObserver); ok && ko.WantsKeys(l) {
		e.observeKeys(ko, l, rows)
	}
	be.RoPE(a.q, c.QDim(), pos, e.rope)
	be.RoPE(a.k, c.KVDim(), pos, e.rope)
	seqs := e.attnSeqs(l, rows)
	be.Attention(a.att, a.q, a.k, a.v, seqs, e.attn)
	e.observe(l, seqs)
	for i, s := range seqs {
		a.seqOf[i].n[l] += s.Rows
	}
	if err := e.project(l, a.att, rows, projection{ProjO, a.xn, w.wo, nil}); err != nil {
		return err
	}
	be.Add(a.x, a.xn, n*c.NEmbd)

	// MLP: x += Down · (silu(Gate·xn) ⊙ Up·xn).
	be.RMSNorm(a.xn, a.x, w.ffnNorm, n, c.RMSEps)
	if err := e.project(l, a.xn, rows, projection{ProjGate, a.gate, w.gate, nil}, projection{ProjUp, a.up, w.up, nil}); err != nil {
		return err
	}
	be.SwiGLU(a.gate, a.gate, a.up, n*c.NFF)
	if err := e.project(l, a.gate, rows, projection{ProjDown, a.xn, w.down, nil}); err != nil {
		return err
	}
	be.Add(a.x, a.xn, n*c.NEmbd)
	return nil
}

// projection is one of a layer's matrix products: y = W·x (+ bias).
type projection struct {
	p    Proj
	y    accel.Buffer
	w    accel.Weight
	bias accel.Buffer
}

// project computes the projections ps of the input x, which share it (q, k
// and v; gate and up) and so run as one backend operation, then adds each
// one's bias and the delta hook's correction.
func (e *Engine) project(l int, x accel.Buffer, rows []Row, ps ...projection) error {
	prods := e.act.prods[:0]
	for _, p := range ps {
		prods = append(prods, accel.Product{Dst: p.y, W: p.w})
	}
	accel.MatMuls(e.be, x, len(rows), prods)
	for _, p := range ps {
		if p.bias != nil {
			e.be.AddRows(p.y, p.bias, len(rows))
		}
		if d := e.opts.Hooks.Delta; d != nil {
			if err := d.Apply(e.be, l, p.p, x, p.y, rows); err != nil {
				return fmt.Errorf("engine: layer %d delta: %w", l, err)
			}
		}
	}
	return nil
}

// attnSeqs groups rows by sequence for the attention kernel at layer l.
func (e *Engine) attnSeqs(l int, rows []Row) []accel.AttnSeq {
	a := e.act
	a.seqs, a.seqOf = a.seqs[:0], a.seqOf[:0]
	for i, r := range rows {
		if i > 0 && r.Seq == rows[i-1].Seq {
			a.seqs[len(a.seqs)-1].Rows++
			continue
		}
		a.seqs = append(a.seqs, accel.AttnSeq{K: r.Seq.k[l], V: r.Seq.v[l], Past: r.Seq.n[l], Rows: 1})
		a.seqOf = append(a.seqOf, r.Seq)
	}
	if obs := e.opts.Hooks.Observer; obs != nil && obs.Wants(l) {
		so, _ := obs.(ScoreObserver)
		scores := so != nil && so.WantsScores(l)
		total := 0
		for _, s := range a.seqs {
			total += e.cfg.NHead * s.Rows * (s.Past + s.Rows)
		}
		if cap(a.probs) < total {
			a.probs = make([]float32, total)
		}
		off := 0
		for i := range a.seqs {
			s := &a.seqs[i]
			need := e.cfg.NHead * s.Rows * (s.Past + s.Rows)
			if scores {
				s.Scores, off = a.probs[off:off+need], off+need
			} else {
				s.Probs, off = a.probs[off:off+need], off+need
			}
		}
	}
	return a.seqs
}

func (e *Engine) observe(l int, seqs []accel.AttnSeq) {
	obs := e.opts.Hooks.Observer
	if obs == nil || !obs.Wants(l) {
		return
	}
	for i, s := range seqs {
		m := s.Probs
		if s.Scores != nil {
			m = s.Scores
		}
		obs.Observe(l, e.act.seqOf[i], s.Past, s.Rows, e.cfg.NHead, m)
	}
}

// observeHidden reads back the residual stream of rows entering layer l
// for a hidden-state observer.
func (e *Engine) observeHidden(h HiddenObserver, l int, rows []Row) {
	a := e.act
	n := len(rows) * e.cfg.NEmbd
	if cap(a.hidden) < n {
		a.hidden = make([]float32, n)
	}
	e.be.Read(a.hidden[:n], a.x, 0)
	h.ObserveHidden(l, rows, a.hidden[:n])
}

// observeKeys reads back the keys of rows at layer l, before RoPE, for a
// key observer.
func (e *Engine) observeKeys(k KeyObserver, l int, rows []Row) {
	a := e.act
	n := len(rows) * e.cfg.KVDim()
	if cap(a.keys) < n {
		a.keys = make([]float32, n)
	}
	e.be.Read(a.keys[:n], a.k, 0)
	k.ObserveKeys(l, rows, a.keys[:n])
}

// selectRows applies the token selector after layer l, compacting the
// residual stream to the kept rows.
func (e *Engine) selectRows(l int, rows []Row, pos []int32) ([]Row, []int32) {
	keep := e.opts.Hooks.Selector.Select(l, rows)
	if keep == nil || len(keep) == len(rows) {
		return rows, pos
	}
	a := e.act
	e.be.Gather(a.xn, a.x, e.cfg.NEmbd, keep)
	a.x, a.xn = a.xn, a.x
	for i, k := range keep {
		rows[i], pos[i] = rows[k], pos[k]
	}
	return rows[:len(keep)], pos[:len(keep)]
}

// output computes the logits of the rows that asked for them, logitN rows
// at a time.
func (e *Engine) output(rows []Row, logits []float32) error {
	a, c, be := e.act, &e.cfg, e.be
	sel := a.logitRows[:0]
	for i, r := range rows {
		if r.Logits {
			sel = append(sel, int32(i))
		}
	}
	if len(sel)*c.NVocab != len(logits) {
		return fmt.Errorf("engine: %d logits rows survived token selection, %d requested", len(sel), len(logits)/c.NVocab)
	}
	for len(sel) > 0 {
		m := min(len(sel), e.logitN)
		be.Gather(a.outX, a.x, c.NEmbd, sel[:m])
		be.RMSNorm(a.outX, a.outX, e.w.outputNorm, m, c.RMSEps)
		be.MatMul(a.logits, e.w.output, a.outX, m)
		be.Read(logits[:m*c.NVocab], a.logits, 0)
		logits, sel = logits[m*c.NVocab:], sel[m:]
	}
	for _, s := range e.stages {
		if err := accel.Check(s.be); err != nil {
			return fmt.Errorf("engine: %s: %w", s.be.Name(), err)
		}
	}
	return nil
}
