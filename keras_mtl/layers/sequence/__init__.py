"""Behaviour-sequence layers: DIN, DIEN, DMR_U2I and the attention GRU."""
