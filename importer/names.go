package importer

import "github.com/superfly/flyio-image-manager/internal/imagename"

// RefDomain is the registry-style domain of the references process-image
// gives images by default. It is not a registry anyone pulls from: it makes
// the name fully qualified, so ctr and nerdctl take it as is.
const RefDomain = "images.flyio.local"

// DeriveImageID turns an S3 key into an image id (see
// imagename.DeriveImageID, which the dashboard shares).
func DeriveImageID(key string) string { return imagename.DeriveImageID(key) }

// DeriveRef is the default image reference of an image id:
// images.flyio.local/<id>:latest.
func DeriveRef(imageID string) string { return RefDomain + "/" + imageID + ":latest" }
