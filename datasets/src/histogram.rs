//! A histogram drawn as SVG, with no drawing library: bars, axis labels and a title are all a
//! report needs, and any browser or image viewer shows it.

/// Counts of `values` in `bins` equal bins over `[low, high]` (values outside go to the end bins).
pub fn bin_counts(values: &[f64], low: f64, high: f64, bins: usize) -> Vec<u64> {
    let bins = bins.max(1);
    let mut counts = vec![0u64; bins];
    let width = (high - low).max(f64::EPSILON);
    for &v in values {
        let at = (((v - low) / width) * bins as f64).floor();
        counts[(at.max(0.0) as usize).min(bins - 1)] += 1;
    }
    counts
}

/// An SVG picture of `counts` over `[low, high]`, titled `title`.
pub fn histogram_svg(
    title: &str,
    counts: &[u64],
    low: f64,
    high: f64,
    threshold: Option<f64>,
) -> String {
    let (width, height, margin) = (640.0, 360.0, 48.0);
    let plot_w = width - 2.0 * margin;
    let plot_h = height - 2.0 * margin;
    let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar_w = plot_w / counts.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    for (i, &c) in counts.iter().enumerate() {
        let h = plot_h * c as f64 / most;
        let x = margin + i as f64 * bar_w;
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4c78a8\"><title>{c}</title></rect>\n",
            margin + plot_h - h,
            (bar_w - 1.0).max(1.0)
        ));
    }
    let axis_y = margin + plot_h;
    svg.push_str(&format!(
        "<line x1=\"{margin}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"black\"/>\n\
         <text x=\"{margin}\" y=\"{}\" text-anchor=\"middle\">{low:.2}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{high:.2}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
        margin + plot_w,
        axis_y + 16.0,
        margin + plot_w,
        axis_y + 16.0,
        margin - 4.0,
        margin + 4.0,
        most as u64
    ));
    if let Some(t) = threshold.filter(|t| *t >= low && *t <= high) {
        let x = margin + plot_w * (t - low) / (high - low).max(f64::EPSILON);
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{margin}\" x2=\"{x:.1}\" y2=\"{axis_y}\" stroke=\"#e45756\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{x:.1}\" y=\"{}\" fill=\"#e45756\" \
             text-anchor=\"middle\">threshold {t}</text>\n",
            margin - 6.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_their_bins() {
        assert_eq!(
            bin_counts(&[0.0, 0.4, 0.5, 1.0, 7.0, -1.0], 0.0, 1.0, 2),
            vec![3, 3]
        );
        let svg = histogram_svg("a < b", &[1, 2], 0.0, 1.0, Some(0.5));
        assert!(svg.contains("a &lt; b") && svg.contains("threshold 0.5"));
        assert_eq!(svg.matches("<rect").count(), 3);
    }
}
