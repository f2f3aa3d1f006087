//! The `WarmPool` custom resource: its types live in `inferscale-crd`, shared with the adapter
//! that serves their status to HPAs.

pub use inferscale_crd::*;
