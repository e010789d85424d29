"""Frame sources (video files, stills, lists) and writers."""
