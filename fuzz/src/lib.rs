//! What the fuzz targets share: a structure-aware model of the frames a TAP hands over
//! ([`frames`]), decoded from fuzz input with `arbitrary`, and the node the `pipeline` target
//! runs them through ([`node`]).

pub mod frames;
pub mod node;
