"""`recpipe demo`: the whole pipeline on the local stack, a scripted scenario and a web page."""
