package ociarchive

// PauseImage is a pause-like image for CRI's pod sandboxes, so a test
// node needs no registry outside the machine: the busybox base layer of
// TestImage (the same blob, so the two images share its snapshot) and a
// command that sleeps until it is signalled, as pause does.
func PauseImage(ref, busybox string) (Image, error) {
	base, err := BusyboxLayer(busybox)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Ref:    ref,
		Layers: []Layer{base},
		Cmd:    []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"},
	}, nil
}
