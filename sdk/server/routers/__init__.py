"""One router per resource: personas (and their posts, photos and images), runs, and the web page."""
