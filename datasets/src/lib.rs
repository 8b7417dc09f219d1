//! phi-zoo-datasets: corpora to tokens for training (readers, packing, token stores, weighted
//! mixtures). Empty until the datasets issue fills it; the crate exists so the workspace has its
//! final shape and dependents can be wired now.
