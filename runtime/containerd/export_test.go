package containerd

// CrashAfter makes the next creates stop right after step ("container",
// "task", "netns", "network"; "" for none) without cleaning up, as a kill
// of the agent there would leave things. Not safe to call concurrently
// with a create.
func (d *Driver) CrashAfter(step string) { d.crashAfter = step }
