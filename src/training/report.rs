//! What a run's metric logs say afterwards: the training loss of every micro-batch, the validation
//! loss after each epoch, and the loss curve drawn from them (SVG, with axes, ticks and labels).

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// The losses a run logged, by optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// (optimizer step, training loss) of every micro-batch, steps counted from 1 and fractional
    /// within an accumulated step.
    pub train: Vec<(f64, f64)>,
    /// (optimizer step, mean validation loss) after each epoch.
    pub valid: Vec<(usize, f64)>,
}

impl RunReport {
    /// Reads the logs a run of `epochs` epochs of `steps_per_epoch` optimizer steps, each of
    /// `grad_accum` micro-batches, wrote in `dir` (earlier runs' epochs included when it resumed).
    pub fn read(dir: &Path, epochs: usize, steps_per_epoch: usize, grad_accum: usize) -> Self {
        let per_step = grad_accum.max(1) as f64;
        let mut losses = vec![];
        let mut valid = vec![];
        for epoch in 1..=epochs {
            losses.extend(logged_metric(dir, "train", epoch, "Loss").unwrap_or_default());
            if let Some(values) = logged_metric(dir, "valid", epoch, "Loss")
                && !values.is_empty()
            {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                valid.push((epoch * steps_per_epoch, mean));
            }
        }
        let train = losses
            .into_iter()
            .enumerate()
            .map(|(i, loss)| ((i + 1) as f64 / per_step, loss))
            .collect();
        Self { train, valid }
    }

    /// Mean training loss over the first and over the last five micro-batches.
    pub fn first_and_last(&self) -> (f64, f64) {
        let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len().max(1) as f64;
        let first = mean(self.train.iter().take(5).map(|p| p.1).collect());
        let last = mean(self.train.iter().rev().take(5).map(|p| p.1).collect());
        (first, last)
    }

    /// The run's figures as lines of text: `steps` optimizer steps of `tokens` tokens in all took
    /// `seconds`; the loss from its first to its last micro-batches; the validation loss after
    /// each epoch; and, given the FLOPs of one training token and the devices' peak FLOP/s, the
    /// model FLOPs utilisation.
    pub fn summary(
        &self,
        steps: usize,
        seconds: f64,
        tokens: usize,
        flops_per_token_and_peak: Option<(f64, f64)>,
    ) -> String {
        let (first, last) = self.first_and_last();
        let mut text = format!(
            "trained {steps} steps in {seconds:.1} s ({:.0} tokens/s); train loss {first:.3} → {last:.3}",
            tokens as f64 / seconds
        );
        for (step, loss) in &self.valid {
            text += &format!("\n  validation loss after step {step}: {loss:.3}");
        }
        if let Some((per_token, peak)) = flops_per_token_and_peak {
            let flops = per_token * tokens as f64 / seconds;
            text += &format!(
                "\n  MFU {:.1}% ({:.2} TFLOP/s of {:.0} peak)",
                100.0 * flops / peak,
                flops / 1e12,
                peak / 1e12
            );
        }
        text
    }

    /// Draws the curve as an SVG at `path`: the training loss as a line, validation as points,
    /// step on x, loss on y (logarithmic with `log_scale`). Written to a temporary name and
    /// renamed, so a reader never sees half a file.
    pub fn write_svg(&self, path: &Path, log_scale: bool) -> std::io::Result<()> {
        let mut svg = String::new();
        self.draw_on(
            SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area(),
            log_scale,
        )?;
        let partial = path.with_extension("svg.partial");
        std::fs::write(&partial, svg)?;
        std::fs::rename(&partial, path)
    }

    /// The same curve as a PNG at `path` (pure Rust: no system fonts or image libraries).
    pub fn write_png(&self, path: &Path, log_scale: bool) -> std::io::Result<()> {
        // The bitmap backend picks its encoder from the extension, so the temporary name keeps it.
        let partial = path.with_extension("partial.png");
        self.draw_on(
            BitMapBackend::new(&partial, (800, 480)).into_drawing_area(),
            log_scale,
        )?;
        std::fs::rename(&partial, path)
    }

    fn draw_on<DB>(
        &self,
        root: DrawingArea<DB, plotters::coord::Shift>,
        log_scale: bool,
    ) -> std::io::Result<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
    {
        register_font();
        let values = || {
            self.train
                .iter()
                .map(|p| p.1)
                .chain(self.valid.iter().map(|p| p.1))
                .filter(|v| v.is_finite())
        };
        let low = values().fold(f64::INFINITY, f64::min);
        let high = values().fold(f64::NEG_INFINITY, f64::max);
        let (low, high) = if low <= high { (low, high) } else { (1.0, 2.0) };
        let pad = ((high - low) * 0.05).max(1e-3);
        let last_step = self
            .train
            .last()
            .map(|p| p.0)
            .unwrap_or(1.0)
            .max(self.valid.last().map(|p| p.0 as f64).unwrap_or(1.0));
        let steps = 0.0..last_step.max(1.0);
        let drawn = if log_scale {
            let floor = (low * 0.9).max(1e-6);
            self.draw(
                &root,
                steps,
                (floor..high * 1.1).log_scale(),
                "loss (log scale)",
            )
        } else {
            self.draw(&root, steps, (low - pad).max(0.0)..high + pad, "loss")
        };
        drawn.map_err(|e| std::io::Error::other(e.to_string()))?;
        root.present()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn draw<DB, Y>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
        steps: std::ops::Range<f64>,
        losses: Y,
        loss_label: &str,
    ) -> Result<(), Box<dyn std::error::Error + '_>>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption("training loss", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(steps, losses)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc(loss_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                self.train.iter().copied(),
                BLUE.stroke_width(2),
            ))?
            .label("train (per micro-batch)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(
                self.valid
                    .iter()
                    .map(|&(step, loss)| Circle::new((step as f64, loss), 5, RED.filled())),
            )?
            .label("validation (after each epoch)")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    }
}

/// The values (first column, one per micro-batch) of a metric log the learner wrote:
/// `<dir>/<split>/epoch-<epoch>/<metric>.log`, with `_` for the spaces of the metric's name.
/// `None` when there is no such log.
pub fn logged_metric(dir: &Path, split: &str, epoch: usize, metric: &str) -> Option<Vec<f64>> {
    let path = dir.join(format!("{split}/epoch-{epoch}/{metric}.log"));
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split(',').next()?.trim().parse().ok())
            .collect(),
    )
}

/// Gives plotters its one font (the labels' `sans-serif`), once per process.
fn register_font() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .unwrap_or_else(|_| panic!("the embedded font parses"));
    });
}
