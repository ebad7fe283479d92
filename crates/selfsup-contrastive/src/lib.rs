//! selfsup-contrastive
