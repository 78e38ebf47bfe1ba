"""File formats: videos, depth files, camera files; atomic writes."""
