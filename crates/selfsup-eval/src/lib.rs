//! selfsup-eval
