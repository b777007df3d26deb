package main

import (
	"fmt"
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/heraldhq/herald/internal/benchrun"
)

var (
	heraldColor   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	baselineColor = color.RGBA{R: 0xa0, G: 0xa0, B: 0xa0, A: 0xff}
)

// chart draws events/s of every result as a horizontal bar, herald's in
// blue and the baselines' and peers' in grey, grouped by scenario in run
// order (the first at the top), each bar labelled with its value.
func chart(results []benchrun.Result, out string) error {
	if len(results) == 0 {
		return fmt.Errorf("no results to draw")
	}
	rs := slices.Clone(results)
	slices.Reverse(rs) // NominalY puts the first name at the bottom
	names := make([]string, len(rs))
	herald := make(plotter.Values, len(rs))
	base := make(plotter.Values, len(rs))
	xys := make(plotter.XYs, len(rs))
	labels := make([]string, len(rs))
	top := 0.0
	for i, r := range rs {
		names[i] = r.Scenario + " · " + r.System
		if r.Baseline {
			base[i] = r.EventsPerSec
		} else {
			herald[i] = r.EventsPerSec
		}
		xys[i] = plotter.XY{X: r.EventsPerSec, Y: float64(i)}
		labels[i] = fmt.Sprintf(" %s/s", benchrun.Human(r.EventsPerSec))
		top = max(top, r.EventsPerSec)
	}
	p := plot.New()
	p.Title.Text = "herald bench: events/s per scenario and system (higher is better)"
	p.X.Label.Text = "events/s"
	p.X.Min, p.X.Max = 0, top*1.18
	p.X.Tick.Marker = humanTicks{}
	w := vg.Points(11)
	for _, s := range []struct {
		vs plotter.Values
		c  color.Color
		l  string
	}{{herald, heraldColor, "herald"}, {base, baselineColor, "baseline / peer"}} {
		bc, err := plotter.NewBarChart(s.vs, w)
		if err != nil {
			return err
		}
		bc.Horizontal = true
		bc.Color = s.c
		bc.LineStyle.Width = 0
		p.Add(bc)
		p.Legend.Add(s.l, bc)
	}
	lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return err
	}
	lb.Offset = vg.Point{X: vg.Points(2), Y: -vg.Points(4)}
	p.Add(lb)
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Points(4)
	p.Add(plotter.NewGrid())
	p.NominalY(names...)
	h := vg.Points(float64(60 + 18*len(rs)))
	if err := p.Save(10*vg.Inch, h, out); err != nil {
		return fmt.Errorf("save %s: %w", out, err)
	}
	return nil
}

// humanTicks are the default ticks labelled like 20k.
type humanTicks struct{}

// Ticks implements plot.Ticker.
func (humanTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = benchrun.Human(ts[i].Value)
		}
	}
	return ts
}
