//! Small shared helpers of the network layer, below everything else: address blocks and
//! request path normalisation, TLS client settings. No gateway types.

pub mod cidr;
pub mod path;
pub mod tls;
