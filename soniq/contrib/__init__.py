"""Optional extras built on soniq's public surface; the core never imports them."""
