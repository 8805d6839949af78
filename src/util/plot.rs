//! Line charts as self-contained SVG, readable at a glance: a figure is one or more panels stacked over a
//! shared x axis, each panel with its own y axis (quantities of different scales, such as a score and a KL,
//! never share one), ticks at round 1-2-5 steps, whole-number ticks for counts (steps, iterations), and each
//! panel's legend to the right of its data, never over it.
//!
//! ```text
//! Figure::new("PPO", "iteration").whole_x()
//!     .panel(Panel::new("score").line("reward model", rm).line("gold judge", gold))
//!     .panel(Panel::new("KL to SFT (nats)").line("KL", kl))
//!     .svg()
//! ```

use crate::util::table::escape_html;

/// One named line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A reference level (a baseline): drawn dashed.
    pub dashed: bool,
    /// Draw a dot at every point (few points, or points that are measurements rather than a curve).
    pub dots: bool,
}

/// A y axis and the lines drawn against it.
#[derive(Clone, Debug)]
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
}

impl Panel {
    pub fn new(y_label: &str) -> Panel {
        Panel { y_label: y_label.into(), series: vec![] }
    }

    fn push(mut self, name: &str, points: Vec<(f64, f64)>, dashed: bool, dots: bool) -> Panel {
        let points: Vec<(f64, f64)> = points.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if !points.is_empty() {
            self.series.push(Series { name: name.into(), points, dashed, dots });
        }
        self
    }

    /// A solid line (a series without finite points is left out, and so is its legend entry).
    pub fn line(self, name: &str, points: Vec<(f64, f64)>) -> Panel {
        self.push(name, points, false, false)
    }

    /// A solid line with a dot at each point.
    pub fn dotted_line(self, name: &str, points: Vec<(f64, f64)>) -> Panel {
        self.push(name, points, false, true)
    }

    /// A dashed horizontal reference level across `[x0, x1]`.
    pub fn level(self, name: &str, y: f64, x0: f64, x1: f64) -> Panel {
        self.push(name, vec![(x0, y), (x1, y)], true, false)
    }
}

/// Panels stacked over one x axis.
#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    /// The x axis counts (steps, iterations): ticks at whole numbers only.
    pub whole_x: bool,
    pub panels: Vec<Panel>,
}

const WIDTH: f64 = 760.0;
const LEFT: f64 = 72.0; // room for the y tick labels and the y axis name
const PLOT_W: f64 = 470.0;
const LEGEND_X: f64 = LEFT + PLOT_W + 18.0;
const TOP: f64 = 38.0; // the title
const PANEL_H: f64 = 170.0;
const GAP: f64 = 26.0;
const BOTTOM: f64 = 46.0; // x tick labels and the x axis name
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

impl Figure {
    pub fn new(title: &str, x_label: &str) -> Figure {
        Figure { title: title.into(), x_label: x_label.into(), whole_x: false, panels: vec![] }
    }

    /// Ticks of the x axis at whole numbers (an iteration count).
    pub fn whole_x(mut self) -> Figure {
        self.whole_x = true;
        self
    }

    /// Adds a panel below the others; a panel with no finite points is left out.
    pub fn panel(mut self, p: Panel) -> Figure {
        if !p.series.is_empty() {
            self.panels.push(p);
        }
        self
    }

    /// Writes [`Figure::svg`] to `path` atomically.
    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        crate::util::fs::write_atomic(path, self.svg().as_bytes())
    }

    /// The SVG document. A figure without any data still draws its title and says so.
    pub fn svg(&self) -> String {
        let n = self.panels.len().max(1) as f64;
        let height = TOP + n * PANEL_H + (n - 1.0) * GAP + BOTTOM;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            LEFT + PLOT_W / 2.0,
            escape_html(&self.title)
        );
        if self.panels.is_empty() {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#777\">no data yet</text>\n",
                LEFT + PLOT_W / 2.0,
                TOP + PANEL_H / 2.0
            );
            return s + "</svg>\n";
        }
        let xs = self.panels.iter().flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let x_axis = Axis::fit(xs, self.whole_x);
        let sx = |x: f64| LEFT + x_axis.frac(x) * PLOT_W;
        let mut color = 0;
        for (i, panel) in self.panels.iter().enumerate() {
            let top = TOP + i as f64 * (PANEL_H + GAP);
            let bottom = top + PANEL_H;
            let y_axis = Axis::fit(panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), false);
            let sy = |y: f64| bottom - y_axis.frac(y) * PANEL_H;
            // grid and y ticks
            for &t in &y_axis.ticks {
                let y = sy(t);
                s += &format!(
                    "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e6e6e6\"/>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                    LEFT + PLOT_W,
                    LEFT - 6.0,
                    y + 4.0,
                    y_axis.label(t)
                );
            }
            for &t in &x_axis.ticks {
                let x = sx(t);
                s += &format!(
                    "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#f0f0f0\"/>\n"
                );
            }
            s += &format!(
                "<rect x=\"{LEFT}\" y=\"{top:.1}\" width=\"{PLOT_W}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#333\"/>\n\
                 <text transform=\"translate({:.1},{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                16.0,
                top + PANEL_H / 2.0,
                escape_html(&panel.y_label)
            );
            for (k, series) in panel.series.iter().enumerate() {
                let c = COLORS[color % COLORS.len()];
                color += 1;
                let pts: Vec<String> =
                    series.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
                let dash = if series.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
                s += &format!(
                    "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.8\"{dash} points=\"{}\"/>\n",
                    pts.join(" ")
                );
                if series.dots {
                    for &(x, y) in &series.points {
                        s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.6\" fill=\"{c}\"/>\n", sx(x), sy(y));
                    }
                }
                let ly = top + 14.0 + 18.0 * k as f64;
                s += &format!(
                    "<line x1=\"{LEGEND_X}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{c}\" stroke-width=\"2.5\"{dash}/>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                    ly - 4.0,
                    LEGEND_X + 22.0,
                    ly - 4.0,
                    LEGEND_X + 28.0,
                    ly,
                    escape_html(&series.name)
                );
            }
        }
        // x ticks and name under the last panel
        let base = TOP + n * PANEL_H + (n - 1.0) * GAP;
        for &t in &x_axis.ticks {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                sx(t),
                base + 16.0,
                x_axis.label(t)
            );
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            LEFT + PLOT_W / 2.0,
            base + 36.0,
            escape_html(&self.x_label)
        );
        s + "</svg>\n"
    }
}

/// An axis range widened to whole tick steps, and its ticks.
#[derive(Debug, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// About five ticks at a 1-2-5 step covering every value (`whole`: a step of at least 1).
    fn fit(values: impl Iterator<Item = f64>, whole: bool) -> Axis {
        let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 * lo.abs().max(1.0) {
            // one value: a unit-sized window around it
            let pad = if whole { 1.0 } else { (lo.abs() * 0.1).max(0.5) };
            (lo, hi) = (lo - pad, hi + pad);
        }
        let mut step = nice_step((hi - lo) / 5.0);
        if whole {
            step = step.max(1.0);
        }
        let first = (lo / step).floor();
        let last = (hi / step).ceil();
        let ticks: Vec<f64> = (0..=(last - first) as i64).map(|i| (first + i as f64) * step).collect();
        Axis { lo: first * step, hi: last * step, step, ticks }
    }

    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// A tick's text with as many decimals as the step needs (no float noise such as 0.30000000000000004).
    fn label(&self, v: f64) -> String {
        let decimals = if self.step >= 1.0 { 0 } else { (-self.step.log10()).ceil() as usize };
        let v = if v.abs() < self.step * 1e-9 { 0.0 } else { v };
        if v.abs() >= 1e5 || (self.step < 1e-4) {
            return format!("{v:.1e}");
        }
        format!("{v:.decimals$}")
    }
}

/// The smallest of 1, 2, 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|&s| s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_five() {
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(0.0042), 0.005);
    }

    #[test]
    fn axis_covers_the_data_with_round_ticks() {
        let a = Axis::fit([0.37, 2.21].into_iter(), false);
        assert_eq!(a.step, 0.5);
        assert_eq!((a.lo, a.hi), (0.0, 2.5));
        assert_eq!(a.ticks.len(), 6);
        assert_eq!(a.label(a.ticks[3]), "1.5");
        let neg = Axis::fit([-0.3, 0.2].into_iter(), false);
        assert!(neg.lo <= -0.3 && neg.hi >= 0.2);
        assert_eq!(neg.label(0.0), "0.0");
    }

    #[test]
    fn whole_axes_tick_at_integers() {
        // 0..3 iterations would get 0.5 steps; a count gets whole ones
        let a = Axis::fit([0.0, 3.0].into_iter(), true);
        assert!(a.ticks.iter().all(|t| t.fract() == 0.0), "{:?}", a.ticks);
        assert_eq!(a.label(2.0), "2");
        let one = Axis::fit([5.0].into_iter(), true);
        assert!(one.ticks.iter().all(|t| t.fract() == 0.0) && one.lo < 5.0 && one.hi > 5.0);
    }

    #[test]
    fn each_panel_has_its_axis_and_legend_outside_the_data() {
        let fig = Figure::new("PPO", "iteration")
            .whole_x()
            .panel(Panel::new("score").line("reward model", vec![(1.0, 0.1), (2.0, 0.5)]).line("gold", vec![]))
            .panel(Panel::new("KL (nats)").line("KL", vec![(1.0, 10.0), (2.0, 40.0)]));
        assert_eq!(fig.panels.len(), 2);
        assert_eq!(fig.panels[0].series.len(), 1, "a series without points has no legend entry");
        let svg = fig.svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">score<") && svg.contains(">KL (nats)<"));
        // both panels label their own scale: KL's ticks reach 40, the score's stay below 1
        assert!(svg.contains(">40<") && svg.contains(">0.5<"));
        // legend text starts right of the plotting area
        let legend_x = format!("x=\"{:.1}\"", LEGEND_X + 28.0);
        assert_eq!(svg.matches(&legend_x).count(), 2);
    }

    #[test]
    fn an_empty_figure_says_so() {
        let svg = Figure::new("nothing", "step").panel(Panel::new("loss").line("train", vec![(f64::NAN, 1.0)])).svg();
        assert!(svg.contains("no data yet"));
    }
}
