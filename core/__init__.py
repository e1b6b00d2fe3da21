"""Ground floor of the platform: no models; errors, money, querysets, crypto, signals, chart and form helpers."""
