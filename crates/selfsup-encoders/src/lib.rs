//! selfsup-encoders
