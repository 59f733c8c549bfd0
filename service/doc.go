// Package service is the composition root: it builds every part of the
// image manager (the metadata store, the dm-thin pool, the pool-full
// guard, the snapshotter, the S3 client and layer store, the importer,
// the metrics) from the configuration, once, for the daemon and for the
// offline commands alike (Open with a Mode).
//
// It exists so that there is one place that maps config onto the
// packages (s3fetch.Config, dmpool.Config, extract.Options,
// snapshotter.Config, importer.Config): before it, the daemon built its
// snapshotter inline and offline `gc --force` built a second, different
// one (no pool guard), and the config reached the packages three
// different ways. config stays plain TOML types; the packages stay
// ignorant of config; daemon and cmd only serve and wire.
package service
