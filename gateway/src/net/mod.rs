//! Small shared helpers of the network layer, below everything else: address blocks and
//! request path normalisation. No gateway types.

pub mod cidr;
pub mod path;
