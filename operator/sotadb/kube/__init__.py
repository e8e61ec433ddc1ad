"""The Kubernetes runtime: a kopf operator whose handlers only observe → render → apply → report."""
