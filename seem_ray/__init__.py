"""seem_ray."""
