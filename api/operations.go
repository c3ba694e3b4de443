package api

import "github.com/metalhall/metalhall/inventory"

// Operations names every route of the table as a typed operation for Call:
// the method's name is the route's action, its type parameters the route's
// body and reply. TestOperationsMatchTheRouteTable checks each one against
// the table, and that the table has no route without one.
type Operations struct{}

// Ops is how callers name an operation: api.Ops.MachineShow().
var Ops Operations

func (Operations) SiteCreate() Op[SiteCreate, inventory.Site] {
	return op[SiteCreate, inventory.Site]("site.create")
}

func (Operations) SiteList() Op[NoBody, []inventory.Site] {
	return op[NoBody, []inventory.Site]("site.list")
}

func (Operations) HallCreate() Op[HallCreate, inventory.Hall] {
	return op[HallCreate, inventory.Hall]("hall.create")
}

func (Operations) HallList() Op[NoBody, []inventory.Hall] {
	return op[NoBody, []inventory.Hall]("hall.list")
}

func (Operations) HallCapacity() Op[NoBody, inventory.HallCapacity] {
	return op[NoBody, inventory.HallCapacity]("hall.capacity")
}

func (Operations) PhaseCreate() Op[PhaseCreate, inventory.Phase] {
	return op[PhaseCreate, inventory.Phase]("phase.create")
}

func (Operations) PhaseList() Op[NoBody, []PhaseView] {
	return op[NoBody, []PhaseView]("phase.list")
}

func (Operations) PhaseSetState() Op[StateChange, inventory.Phase] {
	return op[StateChange, inventory.Phase]("phase.set-state")
}

func (Operations) RackCreate() Op[RackCreate, inventory.Rack] {
	return op[RackCreate, inventory.Rack]("rack.create")
}

func (Operations) RackList() Op[NoBody, []inventory.Rack] {
	return op[NoBody, []inventory.Rack]("rack.list")
}

func (Operations) RackShow() Op[NoBody, RackDetail] { return op[NoBody, RackDetail]("rack.show") }

func (Operations) RackSetState() Op[StateChange, inventory.Rack] {
	return op[StateChange, inventory.Rack]("rack.set-state")
}

func (Operations) RackDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("rack.delete") }

func (Operations) RackImport() Op[Upload, inventory.ImportResult] {
	return op[Upload, inventory.ImportResult]("rack.import")
}

func (Operations) MachineEnroll() Op[MachineEnroll, Machine] {
	return op[MachineEnroll, Machine]("machine.enroll")
}

func (Operations) MachineList() Op[NoBody, []Machine] { return op[NoBody, []Machine]("machine.list") }

func (Operations) MachineShow() Op[NoBody, Machine] { return op[NoBody, Machine]("machine.show") }

func (Operations) MachineMaintenance() Op[MaintenanceRequest, Machine] {
	return op[MaintenanceRequest, Machine]("machine.maintenance")
}

func (Operations) MachineEvents() Op[NoBody, []inventory.Event] {
	return op[NoBody, []inventory.Event]("machine.events")
}

func (Operations) MachineDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("machine.delete") }

func (Operations) SubnetCreate() Op[SubnetCreate, inventory.Subnet] {
	return op[SubnetCreate, inventory.Subnet]("subnet.create")
}

func (Operations) SubnetList() Op[NoBody, []inventory.Subnet] {
	return op[NoBody, []inventory.Subnet]("subnet.list")
}

func (Operations) TenantCreate() Op[TenantCreate, inventory.Tenant] {
	return op[TenantCreate, inventory.Tenant]("tenant.create")
}

func (Operations) TenantList() Op[NoBody, []inventory.Tenant] {
	return op[NoBody, []inventory.Tenant]("tenant.list")
}

func (Operations) TenantAssign() Op[TenantAssign, TenantAssign] {
	return op[TenantAssign, TenantAssign]("tenant.assign")
}

func (Operations) TenantUnassign() Op[TenantAssign, TenantAssign] {
	return op[TenantAssign, TenantAssign]("tenant.unassign")
}

func (Operations) TokenCreate() Op[TokenCreate, TokenCreated] {
	return op[TokenCreate, TokenCreated]("token.create")
}

func (Operations) TokenList() Op[NoBody, []Token] { return op[NoBody, []Token]("token.list") }

func (Operations) TokenRevoke() Op[NoBody, Token] { return op[NoBody, Token]("token.revoke") }

func (Operations) AuditList() Op[NoBody, []inventory.Event] {
	return op[NoBody, []inventory.Event]("audit.list")
}

func (Operations) Backup() Op[NoBody, Download] { return op[NoBody, Download]("backup") }

func (Operations) BackupArchive() Op[BackupRequest, Download] {
	return op[BackupRequest, Download]("backup.archive")
}

func (Operations) JobResume() Op[NoBody, JobResume] { return op[NoBody, JobResume]("job.resume") }

func (Operations) MachineCommission() Op[NoBody, Job] { return op[NoBody, Job]("machine.commission") }

func (Operations) MachineProvision() Op[ProvisionRequest, Job] {
	return op[ProvisionRequest, Job]("machine.provision")
}

func (Operations) MachineRelease() Op[ReleaseRequest, Job] {
	return op[ReleaseRequest, Job]("machine.release")
}

func (Operations) MachinePower() Op[PowerRequest, Job] { return op[PowerRequest, Job]("machine.power") }

// MachinePowerStatus is machine.power with the action "status": it answers
// the power state, not a job.
func (Operations) MachinePowerStatus() Op[PowerRequest, PowerStatus] {
	return op[PowerRequest, PowerStatus]("machine.power")
}

func (Operations) MachineBootDevice() Op[BootDeviceRequest, BootDeviceRequest] {
	return op[BootDeviceRequest, BootDeviceRequest]("machine.boot-device")
}

func (Operations) MachineJob() Op[NoBody, Job] { return op[NoBody, Job]("machine.job") }

func (Operations) MachineCancel() Op[NoBody, Job] { return op[NoBody, Job]("machine.cancel") }

func (Operations) RackCommission() Op[NoBody, RackCommission] {
	return op[NoBody, RackCommission]("rack.commission")
}

func (Operations) ImageList() Op[NoBody, []Image] { return op[NoBody, []Image]("image.list") }

func (Operations) ImageShow() Op[NoBody, Image] { return op[NoBody, Image]("image.show") }

func (Operations) ImageImport() Op[Upload, Image] { return op[Upload, Image]("image.import") }

func (Operations) ImageImportURL() Op[ImageURLImport, Image] {
	return op[ImageURLImport, Image]("image.import-url")
}

func (Operations) ImageDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("image.delete") }

func (Operations) MachineEraseReport() Op[NoBody, EraseReport] {
	return op[NoBody, EraseReport]("machine.erase-report")
}

func (Operations) MachineAcceptance() Op[NoBody, MachineAcceptance] {
	return op[NoBody, MachineAcceptance]("machine.acceptance")
}

func (Operations) RackAcceptance() Op[NoBody, RackAcceptance] {
	return op[NoBody, RackAcceptance]("rack.acceptance")
}

func (Operations) RackFirmware() Op[NoBody, RackFirmware] {
	return op[NoBody, RackFirmware]("rack.firmware")
}

func (Operations) RackCabling() Op[NoBody, RackCabling] {
	return op[NoBody, RackCabling]("rack.cabling")
}

func (Operations) RackCablingPlan() Op[Upload, CablingPlanResult] {
	return op[Upload, CablingPlanResult]("rack.cabling-plan")
}

func (Operations) MachineSEL() Op[NoBody, SEL] { return op[NoBody, SEL]("machine.sel") }
func (Operations) MachineSELClear() Op[NoBody, SELCleared] {
	return op[NoBody, SELCleared]("machine.sel-clear")
}

func (Operations) JobList() Op[NoBody, []Job] { return op[NoBody, []Job]("job.list") }

func (Operations) RackUpdate() Op[RackUpdate, inventory.Rack] {
	return op[RackUpdate, inventory.Rack]("rack.update")
}

func (Operations) PhaseUpdate() Op[PhaseUpdate, inventory.Phase] {
	return op[PhaseUpdate, inventory.Phase]("phase.update")
}

func (Operations) MachineUpdate() Op[MachineUpdate, Machine] {
	return op[MachineUpdate, Machine]("machine.update")
}

func (Operations) TokenWhoami() Op[NoBody, WhoAmI] { return op[NoBody, WhoAmI]("token.whoami") }

func (Operations) EventList() Op[NoBody, EventPage] { return op[NoBody, EventPage]("event.list") }
func (Operations) SiteUpdate() Op[SiteUpdate, inventory.Site] {
	return op[SiteUpdate, inventory.Site]("site.update")
}

func (Operations) SiteDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("site.delete") }

func (Operations) HallUpdate() Op[HallUpdate, inventory.Hall] {
	return op[HallUpdate, inventory.Hall]("hall.update")
}

func (Operations) HallDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("hall.delete") }

func (Operations) PhaseDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("phase.delete") }

func (Operations) SubnetUpdate() Op[SubnetUpdate, inventory.Subnet] {
	return op[SubnetUpdate, inventory.Subnet]("subnet.update")
}

func (Operations) SubnetDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("subnet.delete") }

func (Operations) TenantUpdate() Op[TenantUpdate, inventory.Tenant] {
	return op[TenantUpdate, inventory.Tenant]("tenant.update")
}

func (Operations) TenantDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("tenant.delete") }

func (Operations) ProfileList() Op[NoBody, []ProfileSummary] {
	return op[NoBody, []ProfileSummary]("profile.list")
}

func (Operations) ProfileShow() Op[NoBody, ProfileDetail] {
	return op[NoBody, ProfileDetail]("profile.show")
}

func (Operations) ProfileValidate() Op[Upload, ProfileDetail] {
	return op[Upload, ProfileDetail]("profile.validate")
}

func (Operations) ProfileImport() Op[Upload, ProfileDetail] {
	return op[Upload, ProfileDetail]("profile.import")
}

func (Operations) ProfileDelete() Op[NoBody, NoReply] { return op[NoBody, NoReply]("profile.delete") }

// MachineConsole streams: in's Body is the keyboard, the Download the
// screen. Give it a client without an overall timeout.
func (Operations) MachineConsole() Op[Upload, Download] {
	return op[Upload, Download]("machine.console")
}

func (Operations) MachineConsoleLog() Op[NoBody, ConsoleLog] {
	return op[NoBody, ConsoleLog]("machine.console-log")
}
