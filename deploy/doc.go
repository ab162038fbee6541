// Package deploy holds no code: its tests check phonehome's packaging in
// this directory and the top-level Dockerfile — that the sample config loads,
// that the image's build steps build, that every series and label the
// Grafana dashboard and the alerting rules query is in a running phonehome's
// /metrics, and that Prometheus, Compose and systemd accept their files — as
// far as a machine without a Docker engine or a running systemd can. See
// README.md beside this file.
package deploy
