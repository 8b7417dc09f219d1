//! pass@k: the chance that at least one of k samples, drawn without replacement from n of which c
//! pass, passes. The unbiased estimator of the Codex paper, `1 - C(n-c, k) / C(n, k)`, in its
//! product form `1 - Π_{i=n-c+1}^{n} (1 - k/i)`, which never forms the huge binomials.

/// pass@k for a problem with `n` samples of which `c` passed. 1 when fewer than `k` samples failed
/// (every draw of k then holds a passing one); `None` when `k` exceeds `n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let all_fail: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    Some(1.0 - all_fail)
}

/// The mean of pass@k over problems given as (samples, passed); `None` when any has fewer than `k`
/// samples.
pub fn mean_pass_at_k(counts: &[(usize, usize)], k: usize) -> Option<f64> {
    if counts.is_empty() {
        return None;
    }
    let total = counts
        .iter()
        .map(|&(n, c)| pass_at_k(n, c, k))
        .sum::<Option<f64>>()?;
    Some(total / counts.len() as f64)
}
