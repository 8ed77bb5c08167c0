"""Neural-architecture-search layers: embedding-size selection and gating."""
